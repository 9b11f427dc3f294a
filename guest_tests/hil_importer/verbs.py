"""ibv_reg_dmabuf_mr() on a soft-RoCE (rdma_rxe) device through libibverbs, with ctypes.

rxe0 is created on the loopback netdev (`rdma link add rxe0 type rxe netdev lo`) unless one exists.
Every resource is released in reverse order whatever happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

from hil_importer.kprobes import KprobeUnavailableError, TraceEvent, call_probe

LIBIBVERBS = "libibverbs.so.1"
RXE_NAME = "rxe0"
IBV_ACCESS_LOCAL_WRITE = 1
INFINIBAND_CLASS = Path("/sys/class/infiniband")


class RxeUnavailableError(RuntimeError):
    """No rxe device or no libibverbs in this guest: the message is the skip reason."""


def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBIBVERBS, use_errno=True)
    except OSError as exc:
        raise RxeUnavailableError(
            f"{LIBIBVERBS} cannot be loaded ({exc}): install libibverbs1 + ibverbs-providers"
        ) from exc
    vp = ctypes.c_void_p
    lib.ibv_get_device_list.argtypes, lib.ibv_get_device_list.restype = (ctypes.POINTER(ctypes.c_int),), vp
    lib.ibv_free_device_list.argtypes, lib.ibv_free_device_list.restype = (vp,), None
    lib.ibv_get_device_name.argtypes, lib.ibv_get_device_name.restype = (vp,), ctypes.c_char_p
    lib.ibv_open_device.argtypes, lib.ibv_open_device.restype = (vp,), vp
    lib.ibv_close_device.argtypes, lib.ibv_close_device.restype = (vp,), ctypes.c_int
    lib.ibv_alloc_pd.argtypes, lib.ibv_alloc_pd.restype = (vp,), vp
    lib.ibv_dealloc_pd.argtypes, lib.ibv_dealloc_pd.restype = (vp,), ctypes.c_int
    if not hasattr(lib, "ibv_reg_dmabuf_mr"):
        raise RxeUnavailableError(f"{LIBIBVERBS} has no ibv_reg_dmabuf_mr (rdma-core older than v34)")
    lib.ibv_reg_dmabuf_mr.argtypes = (vp, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_int,
                                      ctypes.c_int)  # fmt: skip
    lib.ibv_reg_dmabuf_mr.restype = vp
    lib.ibv_dereg_mr.argtypes, lib.ibv_dereg_mr.restype = (vp,), ctypes.c_int
    return lib


def ensure_rxe() -> bool:
    """rxe0 exists afterwards; True if this call created it."""
    if (INFINIBAND_CLASS / RXE_NAME).exists():
        return False
    subprocess.run(["modprobe", "-q", "rdma_rxe"], check=False)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    try:
        proc = subprocess.run(["rdma", "link", "add", RXE_NAME, "type", "rxe", "netdev", "lo"],
                              capture_output=True, text=True, check=False)  # fmt: skip
    except FileNotFoundError as exc:
        raise RxeUnavailableError("no `rdma` tool (iproute2) in the guest") from exc
    if proc.returncode != 0:
        raise RxeUnavailableError(
            f"rdma link add {RXE_NAME} type rxe netdev lo failed: {proc.stderr.strip()}"
        )
    return True


def remove_rxe() -> None:
    subprocess.run(["rdma", "link", "delete", RXE_NAME], capture_output=True, check=False)


@contextlib.contextmanager
def _rxe_pd(lib: ctypes.CDLL) -> Iterator[int]:
    count = ctypes.c_int(0)
    devices = lib.ibv_get_device_list(ctypes.byref(count))
    if not devices:
        raise RxeUnavailableError(
            f"ibv_get_device_list failed: {errno.errorcode.get(ctypes.get_errno(), '?')}"
        )
    try:
        array = ctypes.cast(devices, ctypes.POINTER(ctypes.c_void_p))
        names = {lib.ibv_get_device_name(array[i]).decode(): array[i] for i in range(count.value)}
        if RXE_NAME not in names:
            raise RxeUnavailableError(
                f"libibverbs lists {sorted(names)}, not {RXE_NAME} (rxe provider missing?)"
            )
        ctx = lib.ibv_open_device(names[RXE_NAME])
        if not ctx:
            raise RxeUnavailableError(
                f"ibv_open_device({RXE_NAME}): {errno.errorcode.get(ctypes.get_errno(), '?')}"
            )
        try:
            pd = lib.ibv_alloc_pd(ctx)
            if not pd:
                raise RxeUnavailableError(f"ibv_alloc_pd: {errno.errorcode.get(ctypes.get_errno(), '?')}")
            try:
                yield int(pd)
            finally:
                lib.ibv_dealloc_pd(pd)
        finally:
            lib.ibv_close_device(ctx)
    finally:
        lib.ibv_free_device_list(devices)


# The kernel's handler of the REG_DMABUF_MR uverbs method (uverbs_std_types_mr.c,
# UVERBS_HANDLER(UVERBS_METHOD_REG_DMABUF_MR)): probed to tell who refused, provider library or kernel.
UVERBS_REG_DMABUF_HANDLER = "ib_uverbs_handler_UVERBS_METHOD_REG_DMABUF_MR"


def reg_dmabuf_mr_errno(dmabuf_fd: int, length: int) -> tuple[int, dict[str, object]]:
    """(errno of ibv_reg_dmabuf_mr on rxe0, or 0 if it succeeded (the MR is then released), facts).

    facts["kernel_calls"] counts entries into the kernel handler (None when it cannot be probed).
    """
    lib = _lib()
    created = ensure_rxe()
    facts: dict[str, object] = {"rxe_created": created}
    try:
        with _rxe_pd(lib) as pd, _handler_calls(facts) as events:
            ctypes.set_errno(0)
            mr = lib.ibv_reg_dmabuf_mr(pd, 0, length, 0, dmabuf_fd, IBV_ACCESS_LOCAL_WRITE)
            err = ctypes.get_errno()
            if mr:
                lib.ibv_dereg_mr(mr)
                err = 0
        if events is not None:
            facts["kernel_calls"] = len(events)
        return err, facts
    finally:
        if created:
            remove_rxe()


@contextlib.contextmanager
def _handler_calls(facts: dict[str, object]) -> Iterator[list[TraceEvent] | None]:
    try:
        session = call_probe(UVERBS_REG_DMABUF_HANDLER, "reg_dmabuf_mr")
    except KprobeUnavailableError as exc:
        facts["kernel_calls"] = None
        facts["kernel_calls_why"] = str(exc)
        yield None
        return
    try:
        with session.watch() as events:
            yield events
    finally:
        session.close()
