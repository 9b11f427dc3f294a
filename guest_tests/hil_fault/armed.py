"""System calls built completely before a fault is armed.

Between the fail-nth write and the call nothing may allocate kernel memory in the thread, or the
fault lands there instead (a new Python arena is an mmap, a VMA allocation). So every ctypes object,
address and argument is made in advance and the call is one libc function on plain ints.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int
_close = _libc.close
_close.argtypes = (ctypes.c_int,)
_close.restype = ctypes.c_int
_pwrite = _libc.pwrite
_pwrite.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
_pwrite.restype = ctypes.c_ssize_t


def touch(addr: int, size: int) -> None:
    """Write every byte of [addr, addr + size) (with what is there): the kernel's copy_to_user into it
    then cannot page-fault, and no page-table allocation in this thread takes the armed fault."""
    ctypes.memmove(addr, ctypes.string_at(addr, size), size)


@dataclass(frozen=True, slots=True)
class Outcome:
    ret: int  # the call's return value (a new fd for an export), -1 on failure
    errno: int  # 0 on success


@dataclass
class ArmedIoctl:
    """ioctl(fd, request, &obj); `obj` is kept alive and read back by the caller after the call."""

    fd: int
    request: int
    obj: ctypes.Structure | ctypes.c_int  # c_int: an ioctl without argument (its value is ignored)
    what: str
    _addr: int = field(init=False)

    def __post_init__(self) -> None:
        self._addr = ctypes.addressof(self.obj)
        touch(self._addr, ctypes.sizeof(self.obj))

    def __call__(self) -> Outcome:
        ctypes.set_errno(0)
        ret = _ioctl(self.fd, self.request, self._addr)
        return Outcome(ret, ctypes.get_errno() if ret < 0 else 0)


@dataclass
class ArmedClose:
    fd: int
    what: str = "close"

    def __call__(self) -> Outcome:
        ret = _close(self.fd)
        return Outcome(ret, ctypes.get_errno() if ret < 0 else 0)


@dataclass
class ArmedPwrite:
    """pwrite(fd, data, len, offset): a config-space write through VFIO's config region."""

    fd: int
    data: bytes
    offset: int
    what: str
    _buf: ctypes.Array[ctypes.c_char] = field(init=False)

    def __post_init__(self) -> None:
        self._buf = ctypes.create_string_buffer(self.data, len(self.data))

    def __call__(self) -> Outcome:
        ret = _pwrite(self.fd, self._buf, len(self.data), self.offset)
        if ret < 0:
            return Outcome(-1, ctypes.get_errno())
        if ret != len(self.data):
            return Outcome(int(ret), -1)  # a short write is no errno, but no success either
        return Outcome(int(ret), 0)
