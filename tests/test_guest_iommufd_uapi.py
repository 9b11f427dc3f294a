"""guest_tests/hil_iommufd/uapi.py against the kernel's own headers (include/uapi/linux/iommufd.h and
vfio.h of the 7.2.13 tree the project builds; 7.3's additions against a 7.3 tree when one is unpacked),
and the pure parts of the iommufd importer.

As tests/test_modules_abi.py does for the project's own ABI header: a generated C program, compiled on the
host against the tree's include/uapi, prints every size, offset, constant and ioctl number, and the ctypes
side must agree on each. Without the tree (a fresh machine before `./hil run` unpacked it) those skip;
the hand-computed pins below run everywhere:
    _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr, and every ioctl here is
    _IO(';', nr) = 0x3b00 | nr (iommufd: nr 0x80.., VFIO: 100 + n).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.kernels import cache
from harness.kernels.debsrc import pristine_dir

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
TREE = pristine_dir("linux-source-7.2", "7.2.13-1")
# Whichever 7.3 tree `./hil kernel build src:debian-7.3` unpacked (the newest, if several).
TREES_7_3 = sorted((cache.kernels_root() / "src").glob("linux-source-7.3_*/pristine"))


def _load(name: str) -> ModuleType:
    if str(GUEST_TESTS) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS))
    return importlib.import_module(name)


uapi = _load("hil_iommufd.uapi")
edu = _load("hil_iommufd.edu")
iommufd = _load("hil_iommufd.iommufd")
cdev = _load("hil_iommufd.cdev")


def c_program(
    structs: tuple[type[ctypes.Structure], ...], macros: list[str], guard: str, release: str
) -> str:
    """Prints {"sizeof": {...}, "offsetof": {...}, "const": {...}} for the mirrored parts of the headers."""
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/iommufd.h>",
        "#include <linux/vfio.h>",
        f"#ifndef {guard}",
        f'#error "not a {release} tree\'s iommufd.h"',
        "#endif",
        "int main(void) {",
        'printf("{\\"sizeof\\": {");',
    ]
    for i, struct in enumerate(structs):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{struct.__name__}\\": %zu", sizeof(struct {struct.__name__}));')
    lines.append('printf("}, \\"offsetof\\": {");')
    first = True
    for struct in structs:
        for field_name, *_ in struct._fields_:
            sep = "" if first else ","
            first = False
            key = f"{struct.__name__}.{field_name}"
            lines.append(
                f'printf("{sep}\\"{key}\\": %zu", offsetof(struct {struct.__name__}, {field_name}));'
            )
    lines.append('printf("}, \\"const\\": {");')
    for i, macro in enumerate(macros):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{macro}\\": %llu", (unsigned long long)({macro}));')
    lines += ['printf("}}\\n");', "return 0;", "}"]
    return "\n".join(lines) + "\n"


def compiled_layout(tree: Path, program: str, work: Path) -> dict[str, dict[str, int]]:
    """Compile and run `program` against `tree`'s include/uapi (skips without gcc or libc headers)."""
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc to compile the kernel's uapi headers")
    (work / "layout.c").write_text(program)
    # The tree's include/uapi before the host's: linux/iommufd.h and vfio.h are the kernel's own. What
    # `make headers_install` would strip is defined away: __user (kernel-only annotation) and the
    # "kernel headers from user space" #warning (__EXPORTED_HEADERS__, as headers_install.sh passes).
    argv = [
        "gcc",
        "-Wall",
        "-Werror",
        "-D__user=",
        "-D__EXPORTED_HEADERS__",
        "-I",
        str(tree / "include/uapi"),
        "-I",
        str(tree / "arch/x86/include/uapi"),
        "-o",
        str(work / "layout"),
        str(work / "layout.c"),
    ]
    build = subprocess.run(argv, capture_output=True, text=True, check=False)
    if build.returncode != 0:
        if "linux/types.h" in build.stderr:
            pytest.skip("host has no kernel uapi headers (linux-libc-dev)")
        pytest.fail(f"the kernel's uapi headers do not compile here:\n{build.stderr}")
    run = subprocess.run([str(work / "layout")], capture_output=True, text=True, check=True)
    data: dict[str, dict[str, int]] = json.loads(run.stdout)
    return data


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    if not (TREE / "include/uapi/linux/iommufd.h").is_file():
        pytest.skip(f"the 7.2.13 tree is not unpacked at {TREE} (./hil run --kernel src:debian-7.2 does it)")
    macros = [*uapi.IOCTLS, *uapi.CONSTANTS]
    program = c_program(uapi.STRUCTS, macros, "IOMMU_IOAS_MAP_FILE", "7.2")
    return compiled_layout(TREE, program, tmp_path_factory.mktemp("iommufd-uapi"))


@pytest.fixture(scope="module")
def c_layout_7_3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    if not TREES_7_3:
        pytest.skip("no 7.3 tree is unpacked (./hil kernel build src:debian-7.3 does it)")
    program = c_program(uapi.STRUCTS_7_3, list(uapi.IOCTLS_7_3), "IOMMU_IOAS_NOIOMMU_GET_PA", "7.3")
    return compiled_layout(TREES_7_3[-1], program, tmp_path_factory.mktemp("iommufd-uapi-7.3"))


def assert_layout(layout: dict[str, dict[str, int]], struct: type[ctypes.Structure]) -> None:
    """The ctypes mirror has the C struct's size and every field at the C offset."""
    assert ctypes.sizeof(struct) == layout["sizeof"][struct.__name__]
    for field_name, *_ in struct._fields_:
        offset = getattr(struct, field_name).offset
        assert offset == layout["offsetof"][f"{struct.__name__}.{field_name}"], field_name


@pytest.mark.parametrize("struct", uapi.STRUCTS, ids=lambda s: s.__name__)
def test_struct_layout_matches_the_kernel_header(
    c_layout: dict[str, dict[str, int]], struct: type[ctypes.Structure]
) -> None:
    assert_layout(c_layout, struct)


@pytest.mark.parametrize("macro", [*uapi.IOCTLS, *uapi.CONSTANTS])
def test_number_matches_the_kernel_header(c_layout: dict[str, dict[str, int]], macro: str) -> None:
    ours = {**uapi.IOCTLS, **uapi.CONSTANTS}[macro]
    assert ours == c_layout["const"][macro]


@pytest.mark.parametrize("struct", uapi.STRUCTS_7_3, ids=lambda s: s.__name__)
def test_7_3_struct_layout_matches_the_kernel_header(
    c_layout_7_3: dict[str, dict[str, int]], struct: type[ctypes.Structure]
) -> None:
    assert_layout(c_layout_7_3, struct)


@pytest.mark.parametrize("macro", list(uapi.IOCTLS_7_3))
def test_7_3_number_matches_the_kernel_header(c_layout_7_3: dict[str, dict[str, int]], macro: str) -> None:
    assert uapi.IOCTLS_7_3[macro] == c_layout_7_3["const"][macro]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IOMMU_DESTROY", 0x3B80),
        ("IOMMU_IOAS_ALLOC", 0x3B81),
        ("IOMMU_IOAS_IOVA_RANGES", 0x3B84),
        ("IOMMU_IOAS_MAP", 0x3B85),
        ("IOMMU_IOAS_UNMAP", 0x3B86),
        ("IOMMU_IOAS_MAP_FILE", 0x3B8F),
        ("VFIO_DEVICE_BIND_IOMMUFD", 0x3B76),  # 100 + 18 = 0x76
        ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 0x3B77),
        ("VFIO_DEVICE_DETACH_IOMMUFD_PT", 0x3B78),
        ("IOMMU_IOAS_NOIOMMU_GET_PA", 0x3B95),
    ],
)
def test_ioctl_numbers_by_hand(name: str, value: int) -> None:
    assert {**uapi.IOCTLS, **uapi.IOCTLS_7_3}[name] == value


@pytest.mark.parametrize(
    ("struct", "size", "offsets"),
    [
        ("iommu_ioas_alloc", 12, {"flags": 4, "out_ioas_id": 8}),
        ("iommu_ioas_map_file", 40, {"ioas_id": 8, "fd": 12, "start": 16, "length": 24, "iova": 32}),
        ("iommu_ioas_map", 40, {"user_va": 16, "length": 24, "iova": 32}),
        ("iommu_ioas_unmap", 24, {"ioas_id": 4, "iova": 8, "length": 16}),
        ("iommu_ioas_iova_ranges", 32, {"num_iovas": 8, "allowed_iovas": 16, "out_iova_alignment": 24}),
        ("vfio_device_bind_iommufd", 24, {"iommufd": 8, "out_devid": 12, "token_uuid_ptr": 16}),
        ("vfio_device_attach_iommufd_pt", 16, {"pt_id": 8, "pasid": 12}),
        ("iommu_ioas_noiommu_get_pa", 40, {"ioas_id": 8, "iova": 16, "length": 24, "out_phys": 32}),
    ],
)
def test_struct_layouts_by_hand(struct: str, size: int, offsets: dict[str, int]) -> None:
    cls = getattr(uapi, struct)
    assert ctypes.sizeof(cls) == size
    for field, offset in offsets.items():
        assert getattr(cls, field).offset == offset


def test_map_file_request_fields() -> None:
    req = iommufd.map_file_request(3, 7, 0x1000, 0x4000000, 0x10_0000_0000, iommufd.READ_WRITE | 1)
    raw = bytes(req)
    assert int.from_bytes(raw[0:4], "little") == 40  # size covers the struct
    assert int.from_bytes(raw[4:8], "little") == 0b111  # FIXED_IOVA | WRITEABLE | READABLE
    assert int.from_bytes(raw[8:12], "little") == 3
    assert int.from_bytes(raw[12:16], "little", signed=True) == 7
    assert int.from_bytes(raw[16:24], "little") == 0x1000
    assert int.from_bytes(raw[32:40], "little") == 0x10_0000_0000


@pytest.mark.parametrize(
    ("direction", "length", "buf_offset"),
    [(2, 16, 0), (0, 0, 0), (1, 4097, 0), (0, 16, 4088), (0, 16, -1)],
)
def test_edu_refuses_what_would_abort_qemu(direction: int, length: int, buf_offset: int) -> None:
    """hw/misc/edu.c edu_check_range() calls hw_error() (QEMU aborts) outside the 4 KiB buffer."""
    with pytest.raises(OSError) as info:
        edu.check_transfer(direction, length, buf_offset)
    assert info.value.errno == errno.EINVAL


def test_edu_accepts_the_whole_buffer() -> None:
    edu.check_transfer(edu.TO_ADDR, edu.BUFFER_SIZE, 0)
    edu.check_transfer(edu.FROM_ADDR, 8, edu.BUFFER_SIZE - 8)


def test_iova_range_holds_inclusive_last() -> None:
    r = iommufd.IovaRange(0x1000, 0x1FFF)
    assert r.holds(0x1000, 0x1000)
    assert not r.holds(0x1000, 0x1001)
    assert not r.holds(0xFFF, 2)


def test_cdev_name_from_sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cdev, "PCI_DEVICES", tmp_path)
    (tmp_path / "0000:05:00.0" / "vfio-dev" / "vfio3").mkdir(parents=True)
    assert cdev.cdev_name("0000:05:00.0") == "vfio3"
    assert cdev.cdev_path("0000:05:00.0") == Path("/dev/vfio/devices/vfio3")
    with pytest.raises(cdev.NoCdevError, match="bound to vfio-pci"):
        cdev.cdev_name("0000:06:00.0")
