"""read_bundle: a bundle file -> Bundle, every member checked before anything is believed.

Members are extracted one by one into a fresh temporary directory (never with tarfile's extract): a
name that is absolute or climbs out with `..`, a link, a device, a member not listed in the manifest
or whose sha256 differs, a listed member that is missing: each is a ConfigError naming the bundle and
the member, and the temporary directory is removed before the error leaves.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from harness.bundle import manifest as m
from harness.errors import ConfigError, InfraError
from harness.results.read import CellDocument, read_results_json

# A bundle is a cell's text files and a kernel .config: this is far above any real one, and bounds
# what a hostile archive can make us write.
MAX_BUNDLE_BYTES = 512 << 20


@dataclass
class Bundle:
    """A checked bundle, extracted in `root` (a temporary directory: close() removes it)."""

    path: Path
    root: Path
    manifest: m.Manifest

    def member(self, name: str) -> Path:
        return self.root / name

    def original(self) -> CellDocument:
        """The original run's results.json."""
        try:
            return read_results_json(self.member(m.RESULTS))
        except InfraError as exc:
            raise ConfigError(f"results.json: {exc}", str(self.path)) from None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Bundle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _member_name(info: tarfile.TarInfo, where: str) -> str:
    name = info.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("/"):
        raise ConfigError(f"member {name!r} has an absolute path", where)
    if ".." in pure.parts:
        raise ConfigError(f"member {name!r} climbs out of the bundle (..)", where)
    if info.issym() or info.islnk():
        raise ConfigError(
            f"member {name!r} is a link (to {info.linkname!r}); a bundle holds only files", where
        )
    if not (info.isfile() or info.isdir()):
        raise ConfigError(f"member {name!r} is not a regular file", where)
    return str(pure)


def _extract(path: Path, into: Path, where: str) -> dict[str, str]:
    """Every file member written under `into`; returns member -> sha256."""
    sums: dict[str, str] = {}
    total = 0
    with tarfile.open(path, "r:gz") as tar:
        for info in tar:
            name = _member_name(info, where)
            if info.isdir():
                continue
            total += info.size
            if total > MAX_BUNDLE_BYTES:
                raise ConfigError(
                    f"more than {MAX_BUNDLE_BYTES >> 20} MiB of members: not a p2p-hil bundle", where
                )
            if name in sums:
                raise ConfigError(f"member {name!r} appears twice", where)
            source = tar.extractfile(info)
            assert source is not None, "a regular file member has contents"
            data = source.read()
            if len(data) != info.size:
                raise EOFError(f"member {name!r} is cut off")
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755 if info.mode & 0o100 else 0o644)
            sums[name] = m.sha256_bytes(data)
    return sums


def read_bundle(path: Path) -> Bundle:
    where = str(path)
    if not path.is_file():
        raise ConfigError("no such bundle file", where)
    root = Path(tempfile.mkdtemp(prefix="p2p-hil-bundle-"))
    try:
        try:
            sums = _extract(path, root, where)
        except (tarfile.TarError, zlib.error) as exc:
            raise ConfigError(f"not a p2p-hil bundle (a .tar.gz): {exc}", where) from None
        except OSError as exc:
            if exc.errno is not None:
                raise  # a local I/O problem (disk full), not the bundle's
            raise ConfigError(f"not a p2p-hil bundle (a .tar.gz): {exc}", where) from None
        except EOFError as exc:
            raise ConfigError(f"truncated bundle: the archive ends early ({exc})", where) from None
        if m.MANIFEST not in sums:
            raise ConfigError("no manifest.json in the archive: not a p2p-hil bundle", where)
        try:
            data = json.loads((root / m.MANIFEST).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"manifest.json is not JSON: {exc}", where) from None
        manifest = m.manifest_from_json(data, where)
        _check_sums(manifest, sums, where)
        bundle = Bundle(path, root, manifest)
        bundle.original()  # readable now, or a ConfigError now
        return bundle
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _check_sums(manifest: m.Manifest, sums: dict[str, str], where: str) -> None:
    present = {name: digest for name, digest in sums.items() if name != m.MANIFEST}
    for name, digest in sorted(manifest.files.items()):
        if name not in present:
            raise ConfigError(f"member {name!r} is listed in manifest.json but missing", where)
        if present[name] != digest:
            raise ConfigError(f"member {name!r}: sha256 mismatch (changed since the bundle was made)", where)
    extra = sorted(set(present) - set(manifest.files))
    if extra:
        raise ConfigError(f"member {extra[0]!r} is not listed in manifest.json", where)
    for name in (m.RESULTS, m.TOPOLOGY_JSON, m.PLAN):
        if name not in present:
            raise ConfigError(f"no {name}: not a complete p2p-hil bundle", where)
