"""p2p-hil: hardware-in-the-loop tests for Linux PCIe peer-to-peer DMA on generated QEMU machines."""

__version__ = "0.1.0"
