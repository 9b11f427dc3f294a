"""Importers of the exporter's VFIO dma-buf: hil_p2p_importer (a dynamic dma-buf importer) and
hil_rdma_importer (the RDMA core's ib_umem dma-buf import), and rdma_rxe through libibverbs.

Expected errnos come from the v7.2 source:
- vfio_pci_dmabuf.c vfio_pci_dma_buf_attach(): !attachment->peer2peer -> EOPNOTSUPP (an importer
  without allow_peer2peer is refused at attach, not at map); !dma_buf_attach_revocable() -> EOPNOTSUPP
  (no invalidate_mappings callback); vfio_pci_dma_buf_map() on a revoked buffer -> ENODEV.
- dma-buf-mapping.c dma_buf_phys_vec_to_sgt(): a NOT_SUPPORTED route -> EINVAL at map time.
- uverbs_std_types_mr.c: a device without reg_user_mr_dmabuf (rxe) -> EOPNOTSUPP.
Where a route matters, the oracle's prediction in the plan decides what is expected.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable

import pytest
from hil_importer import abi
from hil_importer.bufinfo import attached_devices
from hil_importer.case import BAR, ImportCase, collection_plan, importer_ids, require_feature
from hil_importer.expect import expected_list, mismatches, trim
from hil_importer.loader import Manifest
from hil_importer.p2p import P2pImporter
from hil_importer.pci import bar, parse_bdf
from hil_importer.rdma import RdmaImporter
from hil_importer.revoke import set_memory_enable
from hil_importer.verbs import RxeUnavailableError, reg_dmabuf_mr_errno
from hil_vfio import dmabuf_size, errname

from harness.guest.shapes import PAGE

pytest_plugins = ["hil_importer.fixtures"]

IMPORTERS = importer_ids(collection_plan()) or ["importer"]
# As the importing device's driver would set it (edu's DMA engine is 64-bit).
MASK_BITS = 64
STUBBORN_WAIT_S = 1.0
UNBLOCK_TIMEOUT_S = 10.0


def _mappable_importer(case: ImportCase) -> str:
    """An importer the oracle says maps, for tests of importer mechanics rather than routing."""
    for importer_id in IMPORTERS:
        if case.route(importer_id) != "refused":
            return importer_id
    pytest.skip(f"no importer maps {case.exporter_spec.id}'s buffer on this topology (all refused)")


def _attach_mapped(case: ImportCase, p2p: P2pImporter, flags: int = 0) -> tuple[int, int]:
    """(dma-buf fd, handle) of a whole-BAR buffer attached and mapped for a mappable importer."""
    fd = case.export()
    handle = p2p.attach(
        fd, case.function(_mappable_importer(case)), flags=flags, dma_mask_bits=MASK_BITS
    ).handle
    p2p.map(handle)
    return fd, handle


# --- the module --------------------------------------------------------------------------------


def test_module_matches_probes(
    p2p: P2pImporter, p2p_module: Manifest, hil_details: dict[str, object]
) -> None:
    """The features compiled into the module are what the host's compile probes found."""
    features = p2p.version.features
    hil_details.update(abi=p2p.version.abi_version, features=hex(features), probed=p2p_module.features)
    assert p2p.version.abi_version == abi.ABI_VERSION
    assert bool(features & abi.FEAT_REVOKE_CB) == p2p_module.features["revoke_callback"]
    assert bool(features & abi.FEAT_INVALIDATE_MAPPINGS) == p2p_module.features["invalidate_mappings"]
    assert bool(features & abi.FEAT_MOVE_NOTIFY) == p2p_module.features["move_notify"]


def test_attach_argument_errors(case: ImportCase, p2p: P2pImporter) -> None:
    """hil_p2p_importer's own checks, before the exporter is involved."""
    fd, dev = case.export(), case.function(IMPORTERS[0])
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "closed fd": (lambda: p2p.attach(9999, dev), errno.EBADF),
        "no such function": (lambda: p2p.attach(fd, parse_bdf("0000:ff:1f.7")), errno.ENODEV),
        "unknown flag": (lambda: p2p.attach(fd, dev, flags=1 << 31), errno.EINVAL),
        "dma mask of 16 bits": (lambda: p2p.attach(fd, dev, dma_mask_bits=16), errno.EINVAL),
    }
    seen = {}
    for name, (call, want) in cases.items():
        with pytest.raises(OSError) as info:
            call()
        seen[name] = errname(info.value.errno)
        assert info.value.errno == want, f"{name}: {seen[name]}, expected {errname(want)}"
    case.details["errnos"] = seen


@pytest.mark.parametrize(
    "flags",
    [abi.P2P_NO_P2P, abi.P2P_NO_REVOKE_CB, abi.P2P_NO_P2P | abi.P2P_NO_REVOKE_CB],
    ids=["no-p2p", "no-revoke-cb", "neither"],
)
def test_vfio_refuses_importer(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest, flags: int) -> None:
    """VFIO's attach callback refuses importers that cannot take MMIO or cannot be revoked: EOPNOTSUPP."""
    if not flags & abi.P2P_NO_REVOKE_CB:
        # Without a callback compiled in the module itself answers EOPNOTSUPP: a pass for the wrong reason.
        require_feature(p2p_module, "revoke_callback")
    dev = case.function(IMPORTERS[0])
    with pytest.raises(OSError) as info:
        p2p.attach(case.export(), dev, flags=flags)
    case.details.update(importer=dev.bdf, flags=hex(flags), errno=errname(info.value.errno))
    assert info.value.errno == errno.EOPNOTSUPP


# --- attach and map, per importing device ------------------------------------------------------


@pytest.mark.parametrize("importer_id", IMPORTERS)
def test_attach_and_map(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest, importer_id: str) -> None:
    """Attach for the device and map: a list covering the buffer, or EINVAL where the route is refused."""
    require_feature(p2p_module, "revoke_callback")
    route = case.route(importer_id)
    fd, dev = case.export(), case.function(importer_id)
    att = p2p.attach(fd, dev, dma_mask_bits=MASK_BITS)
    case.details.update(importer=dev.bdf, route=route, dma_mask=hex(att.dma_mask))
    assert att.dma_mask == (1 << MASK_BITS) - 1
    if route == "refused":
        with pytest.raises(OSError) as info:
            p2p.map(att.handle)
        case.details["map_errno"] = errname(info.value.errno)
        assert info.value.errno == errno.EINVAL
        st = p2p.status(att.handle)
        assert (st.mapped, st.last_map_errno) == (False, errno.EINVAL)
        return
    dma = p2p.map(att.handle)
    case.details["sg"] = dma.describe()
    size = dmabuf_size(fd)
    assert dma.total == size
    assert all(e.dma_addr % PAGE == 0 and e.length % PAGE == 0 for e in dma.entries)
    assert dma.orig_nents == 0, "dma_buf_phys_vec_to_sgt builds no CPU list"
    st = p2p.status(att.handle)
    assert (st.mapped, st.nents, st.dmabuf_size, st.last_map_errno) == (True, len(dma.entries), size, 0)
    assert p2p.sg(att.handle) == dma, "SG must read back the same list"
    _assert_errno(lambda: p2p.map(att.handle), errno.EBUSY)  # one mapping per attachment
    p2p.unmap(att.handle)
    _assert_errno(lambda: p2p.unmap(att.handle), errno.ENODATA)
    p2p.detach(att.handle)
    _assert_errno(lambda: p2p.status(att.handle), errno.ENOENT)


def _assert_errno(call: Callable[[], object], want: int) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == want, f"{errname(info.value.errno)}, expected {errname(want)}"


# --- revocation and cleanup --------------------------------------------------------------------


def test_revocation_unmaps(case: ImportCase, p2p: P2pImporter, p2p_module: Manifest) -> None:
    """Memory disable revokes: the callback unmaps; maps fail ENODEV until memory is enabled again."""
    require_feature(p2p_module, "revoke_callback")
    fd, handle = _attach_mapped(case, p2p)
    set_memory_enable(case.exporter, False)
    try:
        st = p2p.status(handle)
        case.details["after_revoke"] = repr(st)
        assert (st.mapped, st.revocations) == (False, 1)
        with pytest.raises(OSError) as info:
            p2p.map(handle)
        case.details["map_while_revoked"] = errname(info.value.errno)
        assert info.value.errno == errno.ENODEV
    finally:
        set_memory_enable(case.exporter, True)
    st = p2p.status(handle)
    case.details["after_restore"] = repr(st)
    assert st.revocations == 2, "un-revoking invalidates once more (vfio_pci_dma_buf_move(vdev, false))"
    assert p2p.map(handle).total == dmabuf_size(fd)


def test_stubborn_importer_blocks_revocation(
    case: ImportCase, p2p: P2pImporter, p2p_module: Manifest
) -> None:
    """An importer that ignores the callback holds the revoking writer until it unmaps (no timeout)."""
    require_feature(p2p_module, "revoke_callback")
    _fd, handle = _attach_mapped(case, p2p, flags=abi.P2P_STUBBORN)
    revoker = threading.Thread(target=set_memory_enable, args=(case.exporter, False), daemon=True)
    revoker.start()
    try:
        time.sleep(STUBBORN_WAIT_S)
        st = p2p.status(handle)
        case.details.update(blocked=revoker.is_alive(), status_while_blocked=repr(st))
        assert revoker.is_alive(), "the revoking config write returned while a mapping was still held"
        assert (st.mapped, st.revocations) == (True, 1)
    finally:
        # Unblocks the writer: dma_buf_unmap_attachment drops the exporter's last mapping reference.
        p2p.unmap(handle)
        started = time.monotonic()
        revoker.join(UNBLOCK_TIMEOUT_S)
        case.details["unblocked_after_s"] = round(time.monotonic() - started, 3)
        if not revoker.is_alive():
            set_memory_enable(case.exporter, True)
    assert not revoker.is_alive(), f"the writer stayed blocked {UNBLOCK_TIMEOUT_S}s after UNMAP"


def test_close_releases_attachments(case: ImportCase, p2p_module: Manifest) -> None:
    """Closing /dev/hil_p2p with a mapping left unmaps and detaches it (debugfs bufinfo lists none)."""
    require_feature(p2p_module, "revoke_callback")
    importer = P2pImporter()
    try:
        fd, _handle = _attach_mapped(case, importer)
        ino = os.fstat(fd).st_ino
        before = attached_devices(ino)
    finally:
        importer.close()
    after = attached_devices(ino)
    case.details.update(attached_before=before, attached_after=after)
    if before is None:
        pytest.skip("no debugfs dma_buf/bufinfo to list attachments")
    assert len(before) == 1
    assert after == []


# --- RDMA: the ib_umem dma-buf import ----------------------------------------------------------


@pytest.mark.parametrize("importer_id", IMPORTERS)
@pytest.mark.parametrize("mode", [abi.RDMA_REVOCABLE, abi.RDMA_DYNAMIC], ids=["revocable", "dynamic"])
def test_rdma_umem_maps(
    case: ImportCase, rdma: RdmaImporter, rdma_module: Manifest, importer_id: str, mode: int
) -> None:
    """An MR of all but the first and last page: the umem's list is the dma-buf's, trimmed to the MR."""
    require_feature(rdma_module, "umem_revocable" if mode == abi.RDMA_REVOCABLE else "revoke_callback")
    route = case.route(importer_id)
    fd, dev = case.export(), case.function(importer_id)
    offset, length = PAGE, case.bar_size - 2 * PAGE
    case.details.update(importer=dev.bdf, route=route)

    def register() -> int:
        return rdma.register(fd, dev, offset=offset, length=length, mode=mode, dma_mask_bits=MASK_BITS)

    if route == "refused":
        with pytest.raises(OSError) as info:
            register()
        case.details["reg_errno"] = errname(info.value.errno)
        assert info.value.errno == errno.EINVAL
        return
    handle = register()
    umem = rdma.sg(handle)
    bar2 = bar(case.exporter.bdf, BAR)
    want = trim(expected_list(route, [(0, case.bar_size)], bar2.start), offset, length)
    case.details.update(umem_sg=umem.describe(), expected=[str(e) for e in want.entries])
    problems = mismatches(want, umem, bar2.start, bar2.size)
    assert not problems, f"{route}: umem list {umem.describe()}: " + "; ".join(problems)
    st = rdma.status(handle)
    assert (st.mapped, st.revoked, st.nents) == (True, False, len(umem.entries))
    rdma.deregister(handle)


def test_rdma_pinned_import_refused(case: ImportCase, rdma: RdmaImporter, rdma_module: Manifest) -> None:
    """ib_umem_dmabuf_get_pinned*() attach without a revocation callback: VFIO says EOPNOTSUPP."""
    require_feature(rdma_module, "umem_pinned_dma_device")
    fd = case.export()
    with pytest.raises(OSError) as info:
        rdma.register(fd, case.function(IMPORTERS[0]), offset=0, length=case.bar_size, mode=abi.RDMA_PINNED)
    case.details["errno"] = errname(info.value.errno)
    assert info.value.errno == errno.EOPNOTSUPP


def test_rdma_revocation(case: ImportCase, rdma: RdmaImporter, rdma_module: Manifest) -> None:
    """A revocable umem is revoked for good: the driver callback runs once and the list is gone."""
    require_feature(rdma_module, "umem_revocable")
    fd, dev = case.export(), case.function(_mappable_importer(case))
    handle = rdma.register(fd, dev, offset=0, length=case.bar_size, dma_mask_bits=MASK_BITS)
    set_memory_enable(case.exporter, False)
    try:
        st = rdma.status(handle)
    finally:
        set_memory_enable(case.exporter, True)
    after_restore = rdma.status(handle)
    case.details.update(revoked=repr(st), after_restore=repr(after_restore))
    assert (st.mapped, st.revoked, st.revocations) == (False, True, 1)
    # ib_umem_dmabuf_revoke_locked() returns early once revoked: the un-revoke is not passed on.
    assert (after_restore.mapped, after_restore.revoked, after_restore.revocations) == (False, True, 1)
    _assert_errno(lambda: rdma.sg(handle), errno.ENODATA)


def test_rxe_reg_dmabuf_mr_unsupported(case: ImportCase) -> None:
    """rdma_rxe has no reg_user_mr_dmabuf: ibv_reg_dmabuf_mr fails cleanly with EOPNOTSUPP."""
    fd = case.export()
    try:
        err, facts = reg_dmabuf_mr_errno(fd, case.bar_size)
    except RxeUnavailableError as exc:
        pytest.skip(str(exc))
    case.details.update(facts, errno=errname(err))
    assert err == errno.EOPNOTSUPP
