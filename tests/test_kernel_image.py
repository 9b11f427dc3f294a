"""Ready image files: version from the bzImage header, and where modules / build trees are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kernels.image import resolve_kernel


def _fake_bzimage(path: Path, version: str) -> None:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    offset = 0x800
    data[0x20E:0x210] = (offset - 0x200).to_bytes(2, "little")
    text = f"{version} (builder@host) #1 SMP".encode() + b"\0"
    data[offset : offset + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def _quiet(_message: str) -> None:
    pass


def test_a_debian_style_vmlinuz_carries_its_modules_root(tmp_path: Path) -> None:
    image = tmp_path / "root" / "usr" / "lib" / "modules" / "7.2.13+deb14-amd64" / "vmlinuz"
    _fake_bzimage(image, "7.2.13+deb14-amd64")
    kimg = resolve_kernel(str(image), progress=_quiet)
    assert kimg.version == "7.2.13+deb14-amd64"
    assert kimg.modules_root == tmp_path / "root"
    assert kimg.build_dir is None


def test_a_kbuild_bzimage_carries_its_build_dir(tmp_path: Path) -> None:
    image = tmp_path / "o" / "arch" / "x86" / "boot" / "bzImage"
    _fake_bzimage(image, "7.2.13-hil")
    (tmp_path / "o" / ".config").write_text("CONFIG_PCI=y\n")
    kimg = resolve_kernel(str(image), progress=_quiet)
    assert (kimg.version, kimg.build_dir, kimg.config) == (
        "7.2.13-hil",
        tmp_path / "o",
        tmp_path / "o" / ".config",
    )


def test_missing_or_foreign_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_kernel(str(tmp_path / "bzImage"), progress=_quiet)
    junk = tmp_path / "vmlinuz"
    junk.write_bytes(b"\0" * 0x400)
    with pytest.raises(ConfigError, match="not an x86 bzImage"):
        resolve_kernel(str(junk), progress=_quiet)
