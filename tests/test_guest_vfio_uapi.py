"""guest_tests/hil_vfio, its pure parts: ioctl numbers, struct layouts, request building, parsers.

Expected ioctl numbers are worked out by hand from include/uapi/asm-generic/ioctl.h:
    _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
so every VFIO ioctl, _IO(';', 100 + n), is 0x3b00 | (100 + n) = 0x3b64 + n.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"


def _load(name: str) -> ModuleType:
    # hil_vfio lives with the in-guest tests, which put guest_tests on sys.path themselves.
    if str(GUEST_TESTS) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS))
    return importlib.import_module(name)


ioc = _load("hil_vfio.ioc")
uapi = _load("hil_vfio.uapi")
device = _load("hil_vfio.device")
dmabuf = _load("hil_vfio.dmabuf")
sysfs = _load("hil_vfio.sysfs")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VFIO_GET_API_VERSION", 0x3B64),  # 100 + 0
        ("VFIO_CHECK_EXTENSION", 0x3B65),
        ("VFIO_SET_IOMMU", 0x3B66),
        ("VFIO_GROUP_GET_STATUS", 0x3B67),
        ("VFIO_GROUP_SET_CONTAINER", 0x3B68),
        ("VFIO_GROUP_UNSET_CONTAINER", 0x3B69),
        ("VFIO_GROUP_GET_DEVICE_FD", 0x3B6A),
        ("VFIO_DEVICE_GET_INFO", 0x3B6B),
        ("VFIO_DEVICE_GET_REGION_INFO", 0x3B6C),  # 100 + 8
        ("VFIO_DEVICE_RESET", 0x3B6F),  # 100 + 11
        ("VFIO_DEVICE_FEATURE", 0x3B75),  # 100 + 17
        # _IOW('b', 0, struct dma_buf_sync (8 bytes)) = 1 << 30 | 8 << 16 | 0x62 << 8 | 0
        ("DMA_BUF_IOCTL_SYNC", 0x40086200),
        # _IOW('b', 1, const char *): a pointer is 8 bytes on x86-64
        ("DMA_BUF_SET_NAME", 0x40086201),
    ],
)
def test_ioctl_numbers(name: str, value: int) -> None:
    assert getattr(uapi, name) == value


def test_ioc_directions_against_known_kernel_numbers() -> None:
    assert ioc.IOR("E", 0x01, 4) == 0x80044501  # EVIOCGVERSION = _IOR('E', 0x01, int)
    assert ioc.IOR("f", 1, 8) == 0x80086601  # FS_IOC_GETFLAGS = _IOR('f', 1, long)
    assert ioc.IOWR("d", 0x00, 64) == 0xC0406400  # DRM_IOCTL_VERSION, sizeof(drm_version) = 64
    assert ioc.IO(0x3B, 117) == ioc.IO(";", 117)


@pytest.mark.parametrize(("nr", "size"), [(256, 0), (-1, 0), (0, 1 << 14)])
def test_ioc_refuses_fields_that_do_not_fit(nr: int, size: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ioc.IOC(ioc.IOC_READ, "b", nr, size)


def test_feature_flags() -> None:
    assert uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF == 0x1000B
    assert uapi.VFIO_DEVICE_FEATURE_PROBE == 0x40000


@pytest.mark.parametrize(
    ("struct", "size", "offsets"),
    [
        ("vfio_group_status", 8, {"argsz": 0, "flags": 4}),
        ("vfio_region_info", 32, {"index": 8, "cap_offset": 12, "size": 16, "offset": 24}),
        ("vfio_device_feature", 8, {"argsz": 0, "flags": 4}),
        ("vfio_region_dma_range", 16, {"offset": 0, "length": 8}),
        (
            "vfio_device_feature_dma_buf",
            16,
            {"region_index": 0, "open_flags": 4, "flags": 8, "nr_ranges": 12},
        ),
    ],
)
def test_struct_layouts(struct: str, size: int, offsets: dict[str, int]) -> None:
    cls = getattr(uapi, struct)
    assert ctypes.sizeof(cls) == size
    for field, offset in offsets.items():
        assert getattr(cls, field).offset == offset


def test_dma_buf_request_layout_and_defaults() -> None:
    ranges = [device.DmaRange(0, 4096), device.DmaRange(1 << 20, 8192), device.DmaRange(1 << 63, 1 << 63)]
    request = device.dma_buf_request(2, ranges)
    raw = bytes(request)
    assert len(raw) == 8 + 16 + 3 * 16
    assert type(request).dma_ranges.offset == 24
    assert int.from_bytes(raw[0:4], "little") == len(raw)  # argsz covers everything
    assert int.from_bytes(raw[4:8], "little") == 0x1000B  # GET | DMA_BUF
    assert int.from_bytes(raw[8:12], "little") == 2  # region_index
    assert int.from_bytes(raw[12:16], "little") == device.DEFAULT_OPEN_FLAGS
    assert int.from_bytes(raw[16:20], "little") == 0  # flags
    assert int.from_bytes(raw[20:24], "little") == 3  # nr_ranges
    assert int.from_bytes(raw[40:48], "little") == 1 << 20  # ranges[1].offset
    assert int.from_bytes(raw[64:72], "little") == 1 << 63  # ranges[2].length


def test_dma_buf_request_overrides() -> None:
    request = device.dma_buf_request(
        7, [], open_flags=0, flags=1, feature_flags=0, argsz=4, nr_ranges=0xFFFFFFFF
    )
    raw = bytes(request)
    assert len(raw) == 24
    assert int.from_bytes(raw[0:4], "little") == 4
    assert int.from_bytes(raw[4:8], "little") == 11
    assert int.from_bytes(raw[16:20], "little") == 1
    assert int.from_bytes(raw[20:24], "little") == 0xFFFFFFFF


def test_parse_fdinfo() -> None:
    text = (
        "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t11\n"
        "size:\t67108864\ncount:\t1\nexp_name:\tvfio_pci_core\n"
    )
    info = dmabuf.parse_fdinfo(text)
    assert info["size"] == "67108864" and info["exp_name"] == "vfio_pci_core" and info["flags"] == "02000002"


def test_parse_bufinfo() -> None:
    text = (
        "\nDma-buf Objects:\n"
        "size    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n"
        "00004096\t00000002\t000a801f\t00000002\tvfio_pci_core\t00000011\t<none>\n"
        "\tAttached Devices:\n"
        "Total 0 devices attached\n\n"
        "00008192\t00000002\t000a801f\t00000001\tudmabuf\t00000012\tmine\n"
        "\nTotal 2 objects, 12288 bytes\n"
    )
    entries = dmabuf.parse_bufinfo(text)
    assert [(e.size, e.count, e.exp_name, e.ino, e.name) for e in entries] == [
        (4096, 2, "vfio_pci_core", 11, "<none>"),
        (8192, 1, "udmabuf", 12, "mine"),
    ]


def test_resolve_bdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = tmp_path / "bus"
    devices = tmp_path / "devices" / "pci0000:00" / "0000:00:10.0"
    for bdf in ("0000:01:00.0", "0000:02:00.0"):
        (bus / bdf).mkdir(parents=True)
        (devices / bdf).mkdir(parents=True)
    monkeypatch.setattr(sysfs, "PCI_DEVICES", bus)
    assert sysfs.resolve_bdf(str(devices / "0000:01:*")) == "0000:01:00.0"
    with pytest.raises(sysfs.VfioSetupError, match="matched 2"):
        sysfs.resolve_bdf(str(devices / "0000:*"))
    with pytest.raises(sysfs.VfioSetupError, match="matched 0"):
        sysfs.resolve_bdf(str(devices / "0000:09:*"))
    (devices / "not-pci").mkdir()
    with pytest.raises(sysfs.VfioSetupError, match="not a PCI device"):
        sysfs.resolve_bdf(str(devices / "not-pci"))


def _fake_pci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bdf: str) -> Path:
    """A sysfs with one device that has no driver, an IOMMU group 5 and its /dev/vfio node."""
    bus, groups, dev_vfio = tmp_path / "bus", tmp_path / "iommu_groups", tmp_path / "dev-vfio"
    (bus / bdf).mkdir(parents=True)
    (groups / "5").mkdir(parents=True)
    (bus / bdf / "iommu_group").symlink_to(groups / "5")
    dev_vfio.mkdir()
    (dev_vfio / "5").touch()
    (tmp_path / "drivers" / "vfio-pci").mkdir(parents=True)
    monkeypatch.setattr(sysfs, "PCI_DEVICES", bus)
    monkeypatch.setattr(sysfs, "PCI_DRIVERS_PROBE", tmp_path / "drivers_probe")
    monkeypatch.setattr(sysfs, "VFIO_PCI_DRIVER", tmp_path / "drivers" / "vfio-pci")
    monkeypatch.setattr(sysfs, "DEV_VFIO", dev_vfio)
    return bus / bdf


def test_bind_waits_for_the_attach_after_hotplug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A device just plugged back is matched only once pci_bus_add_device() runs: the driver link
    # appears after drivers_probe returned.
    device = _fake_pci(tmp_path, monkeypatch, "0000:01:00.0")
    timer = threading.Timer(0.3, lambda: (device / "driver").symlink_to(tmp_path / "drivers" / "vfio-pci"))
    timer.start()
    try:
        group = sysfs.bind_to_vfio("0000:01:00.0")
    finally:
        timer.join()
    assert group == sysfs.VfioGroup(5, noiommu=False)
    assert (device / "driver_override").read_text() == "vfio-pci"
    assert (tmp_path / "drivers_probe").read_text() == "0000:01:00.0"


def test_bind_names_a_device_no_driver_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pci(tmp_path, monkeypatch, "0000:01:00.0")
    monkeypatch.setattr(sysfs, "BIND_WAIT_S", 0.2)
    with pytest.raises(
        sysfs.VfioSetupError, match=r"0000:01:00.0: bound to None after drivers_probe \(waited"
    ):
        sysfs.bind_to_vfio("0000:01:00.0")


def test_bind_does_not_wait_on_another_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = _fake_pci(tmp_path, monkeypatch, "0000:01:00.0")
    other = tmp_path / "drivers" / "igb"
    other.mkdir()
    (other / "unbind").touch()
    (device / "driver").symlink_to(other)
    slept: list[float] = []
    monkeypatch.setattr(sysfs.time, "sleep", slept.append)
    with pytest.raises(sysfs.VfioSetupError, match="bound to 'igb' after drivers_probe, expected"):
        sysfs.bind_to_vfio("0000:01:00.0")  # the fake driver ignores unbind: still igb
    assert slept == []  # a device some driver claimed will not change by waiting


def test_vfio_group_paths() -> None:
    assert str(sysfs.VfioGroup(7, noiommu=False).path) == "/dev/vfio/7"
    assert str(sysfs.VfioGroup(0, noiommu=True).path) == "/dev/vfio/noiommu-0"


def test_ioctl_raises_oserror_with_the_real_errno(tmp_path: Path) -> None:
    with (tmp_path / "f").open("w") as f, pytest.raises(OSError) as info:
        device.ioctl(f.fileno(), uapi.VFIO_GET_API_VERSION, None, "VFIO_GET_API_VERSION")
    assert info.value.errno == errno.ENOTTY
    assert "VFIO_GET_API_VERSION" in str(info.value)
