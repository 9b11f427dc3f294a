"""resolve_kernel: any kernel spec to a bootable KernelImage, fetching or building as needed.

The second call for the same spec is a cache hit: no network, no apt-get update, no make.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError
from harness.kernels import debian, debsrc, kconfig, source
from harness.kernels.build import build_kernel
from harness.kernels.kimage import KernelImage, Progress
from harness.kernels.proc import capture
from harness.kernels.spec import DebianImage, DebianSource, ImageFile, LocalTree, parse_spec

__all__ = ["KernelImage", "resolve_kernel"]


def _image_version(path: Path) -> str:
    """uname -r of a bzImage: the kernel_version string its setup header points to."""
    try:
        with path.open("rb") as handle:
            header = handle.read(0x4000)
            if header[0x202:0x206] != b"HdrS":
                raise ConfigError(f"{path} is not an x86 bzImage (no HdrS setup header)", "kernel")
            offset = int.from_bytes(header[0x20E:0x210], "little") + 0x200
            handle.seek(offset)
            text = handle.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError as exc:
        raise ConfigError(f"kernel image {path}: {exc.strerror}", "kernel") from exc
    return text.split(" ", 1)[0] if text else capture(["file", "-b", str(path)]).strip()


def _from_file(spec: ImageFile) -> KernelImage:
    path = spec.path.resolve()
    if not path.is_file():
        raise ConfigError(f"kernel image {spec.path} does not exist", "kernel")
    version = _image_version(path)
    # A kbuild output tree around arch/x86/boot/bzImage doubles as build_dir (vng treats it so too).
    build_dir = path.parents[3] if path.match("arch/x86/boot/bzImage") else None
    if build_dir is not None and not (build_dir / ".config").is_file():
        build_dir = None
    # A Debian-style <root>/usr/lib/modules/<version>/vmlinuz carries its modules.
    modules_root = (
        path.parents[4]
        if path.parent.name == version
        and path.parent.parent.name == "modules"
        and path.parents[2].name == "lib"
        and path.parents[3].name == "usr"
        else None
    )
    config = build_dir / ".config" if build_dir else None
    return KernelImage(
        spec=str(spec),
        version=version,
        image=path,
        modules_root=modules_root,
        build_dir=build_dir,
        config=config,
        source=f"file:{path}",
    )


def resolve_kernel(
    spec: str,
    *,
    progress: Progress,
    offline: bool = False,
    series: Path | None = None,
    fragments: Sequence[str] = (),
) -> KernelImage:
    """Fetch or build what `spec` names. `series` (mbox) and extra config `fragments` (names in
    kernels/configs or paths) apply to src: and tree: specs. `offline` never touches the network:
    a cached result or FetchError."""
    parsed = parse_spec(spec, series=series, fragments=tuple(fragments))
    t0 = time.monotonic()
    if isinstance(parsed, ImageFile):
        return _from_file(parsed)
    if isinstance(parsed, DebianImage):
        kimg = debian.fetch_image(parsed, progress, offline=offline)
    else:
        if isinstance(parsed, DebianSource):
            tree = debsrc.fetch_source(parsed, progress, offline=offline)
        else:
            assert isinstance(parsed, LocalTree)
            tree = source.local_tree(parsed.path)
        kimg = build_kernel(
            tree,
            series=parsed.patch_series,
            fragments=kconfig.fragment_names(parsed.fragments),
            progress=progress,
            spec=spec,
        )
    progress(f"kernel {spec}: {kimg.version} ({time.monotonic() - t0:.1f} s)")
    return kimg
