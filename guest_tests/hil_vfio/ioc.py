"""Linux ioctl request numbers, computed as include/uapi/asm-generic/ioctl.h does (x86 layout).

nr: bits 0-7, type: bits 8-15, size: bits 16-29, dir: bits 30-31 (NONE 0, WRITE 1, READ 2)
"""

from __future__ import annotations

from typing import Final

IOC_NRBITS: Final = 8
IOC_TYPEBITS: Final = 8
IOC_SIZEBITS: Final = 14
IOC_DIRBITS: Final = 2

IOC_NRSHIFT: Final = 0
IOC_TYPESHIFT: Final = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT: Final = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT: Final = IOC_SIZESHIFT + IOC_SIZEBITS

IOC_NONE: Final = 0
IOC_WRITE: Final = 1
IOC_READ: Final = 2


def _type_code(type_: str | int) -> int:
    code = ord(type_) if isinstance(type_, str) else type_
    if not 0 <= code < 1 << IOC_TYPEBITS:
        raise ValueError(f"ioctl type {type_!r} does not fit {IOC_TYPEBITS} bits")
    return code


def IOC(direction: int, type_: str | int, nr: int, size: int) -> int:  # noqa: N802 (the C macro's name)
    if not 0 <= nr < 1 << IOC_NRBITS:
        raise ValueError(f"ioctl nr {nr} does not fit {IOC_NRBITS} bits")
    if not 0 <= size < 1 << IOC_SIZEBITS:
        raise ValueError(f"ioctl size {size} does not fit {IOC_SIZEBITS} bits")
    return (
        (direction << IOC_DIRSHIFT)
        | (_type_code(type_) << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


def IO(type_: str | int, nr: int) -> int:  # noqa: N802
    return IOC(IOC_NONE, type_, nr, 0)


def IOR(type_: str | int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_READ, type_, nr, size)


def IOW(type_: str | int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_WRITE, type_, nr, size)


def IOWR(type_: str | int, nr: int, size: int) -> int:  # noqa: N802
    return IOC(IOC_READ | IOC_WRITE, type_, nr, size)
