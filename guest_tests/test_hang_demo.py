"""Opt-in: an importer that never unmaps hangs the revoking process forever (the harness must say hung).

Run it with `./hil run --topology switch-p2p --kernel <built> -k hang_demo --timeout 60`: the verdict is
`hung` (exit 3), results.json's evidence holds the blocked task's kernel stack (the guest entry's
watchdog dumps sysrq-w before the host deadline; the console scanner keeps each "task:... state:D"
block as a `blocked_tasks` problem), and no QEMU process is left.
"""

from __future__ import annotations

import time

import pytest
from hil_importer import abi
from hil_importer.case import ImportCase, importer_ids, require_feature
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter
from hil_importer.revoke import set_memory_enable

pytest_plugins = ["hil_importer.fixtures"]


@pytest.mark.opt_in
# Its own limit: the demo is meant to hang, and the watchdog should say so soon after the importer
# stops unmapping, however long the machine took to start Python.
@pytest.mark.hil_timeout(30)
def test_hang_demo(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """A STUBBORN importer holds a mapping; this test then clears the exporter's memory enable.

    Where it hangs (v7.2): the config write pwrite(2)s into VFIO's config region ->
    vfio_pci_config_rw -> vfio_basic_config_write sees PCI_COMMAND.MEMORY cleared and, holding
    vdev->memory_lock for writing, calls vfio_pci_dma_buf_move(vdev, true): the importer's
    invalidate_mappings callback runs (hil_revoke counts it and, being STUBBORN, keeps the mapping),
    then wait_for_completion(&priv->comp) waits, in TASK_UNINTERRUPTIBLE and without a timeout, for
    the last mapping reference -- which only UNMAP, DETACH or closing /dev/hil_p2p would drop, and this
    same task is the one that would do it. So the pytest process sits in D state forever: no signal
    reaches it, the test never returns, the VM cannot shut down normally; only the guest watchdog's
    sysrq power-off ends it (and the host deadline, should that fail too).
    """
    require_feature(p2p_module, "revoke_callback")
    fd = case.export()
    for importer_id in importer_ids(case.plan):
        if case.route(importer_id) != "refused":
            break
    else:
        pytest.skip("no importer maps the exporter's buffer on this topology")
    handle = p2p.attach(fd, case.function(importer_id), flags=abi.P2P_STUBBORN, dma_mask_bits=64).handle
    p2p.map(handle)
    set_memory_enable(case.exporter, False)  # never returns
    time.sleep(1)
    pytest.fail("the revoking config write returned although the importer kept its mapping")
