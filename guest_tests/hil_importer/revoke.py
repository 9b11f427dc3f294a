"""Revoking a VFIO dma-buf from userspace: clear PCI_COMMAND.MEMORY through the VFIO config region.

vfio_pci_config.c (v7.2) vfio_basic_config_write(): a COMMAND write without MEMORY calls
vfio_pci_dma_buf_move(vdev, true) -- invalidate every importer, then wait (no timeout) until each has
unmapped -- and one with MEMORY back on calls vfio_pci_dma_buf_move(vdev, false), which invalidates
once more while un-revoking. So a revoke + restore is seen by an importer as two callbacks.
"""

from __future__ import annotations

import os
import struct

from hil_vfio import VfioDevice, region_info
from hil_vfio.uapi import VFIO_PCI_CONFIG_REGION_INDEX

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 0x2


def read_command(dev: VfioDevice) -> int:
    offset = region_info(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset + PCI_COMMAND
    value: int = struct.unpack("<H", os.pread(dev.device_fd, 2, offset))[0]
    return value


def set_memory_enable(dev: VfioDevice, enabled: bool) -> None:
    """Blocks while an importer that was told to unmap has not (that is the point of STUBBORN)."""
    offset = region_info(dev, VFIO_PCI_CONFIG_REGION_INDEX).offset + PCI_COMMAND
    command = read_command(dev)
    command = command | PCI_COMMAND_MEMORY if enabled else command & ~PCI_COMMAND_MEMORY
    written = os.pwrite(dev.device_fd, struct.pack("<H", command), offset)
    if written != 2:
        raise OSError(0, f"short config write: {written} of 2 bytes")
