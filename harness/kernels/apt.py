"""A private apt state for fetching Debian kernel packages, never the host's.

Adding sid/trixie to the host's sources upgraded libc6 and broke dpkg on this kind of machine
(FACTS.md), so every apt call here points apt at its own sources.list, lists, caches and an empty
dpkg status, under cache_dir()/apt/<suites>/. The host's apt.conf.d is still read on purpose:
that is where proxies and mirror settings live.

Pure builders (sources text, option lists, argv, output parsers) are separate from the one runner.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FetchError

ARCHIVE = "http://deb.debian.org/debian"
SECURITY_ARCHIVE = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCH = "amd64"

# Where each kernel series lives in the archive (FACTS.md, 2026-11). Unknown 7.x falls back to the
# moving suites, 6.x to the stable releases.
_SUITES: dict[str, tuple[str, ...]] = {
    "7.2": ("sid",),
    "7.3": ("trixie-backports", "experimental"),
    "6.1": ("bookworm", "bookworm-updates", "bookworm-security"),
    "6.12": ("trixie", "trixie-updates", "trixie-security", "bookworm-backports"),
}
_OLD_STABLES = (
    "bookworm",
    "bookworm-updates",
    "bookworm-security",
    "bookworm-backports",
    "trixie",
    "trixie-updates",
    "trixie-security",
    "trixie-backports",
)
_MOVING = ("sid", "trixie-backports", "experimental")


def suites_for(series: str) -> tuple[str, ...]:
    """Suites that carry kernel `series` ("7.2")."""
    if series in _SUITES:
        return _SUITES[series]
    return _OLD_STABLES if series.startswith("6.") else _MOVING


@dataclass(frozen=True)
class AptState:
    """One isolated apt state: a directory and the suites its sources.list names."""

    root: Path
    suites: tuple[str, ...]

    @classmethod
    def for_series(cls, apt_root: Path, series: str) -> AptState:
        suites = suites_for(series)
        return cls(apt_root / "+".join(suites), suites)

    @property
    def sources_list(self) -> Path:
        return self.root / "sources.list"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def preferences_parts(self) -> Path:
        return self.root / "preferences.d"

    @property
    def stamp(self) -> Path:
        return self.root / "updated.stamp"

    def directories(self) -> list[Path]:
        return [self.lists / "partial", self.cache / "archives" / "partial", self.preferences_parts]


def sources_list_text(suites: Sequence[str], keyring: Path = KEYRING) -> str:
    """One-line-style sources.list for `suites`, main only, signed by the Debian archive keyring."""
    lines = ["# Written by p2p-hil for its private apt state; the host's apt never reads this file."]
    for suite in suites:
        archive = SECURITY_ARCHIVE if suite.endswith("-security") else ARCHIVE
        lines.append(f"deb [arch={ARCH} signed-by={keyring}] {archive} {suite} main")
    return "\n".join(lines) + "\n"


def apt_options(state: AptState, *, as_root: bool) -> list[str]:
    """-o options that confine apt-get/apt-cache to `state`."""
    opts = {
        "Dir::Etc::SourceList": str(state.sources_list),
        "Dir::Etc::SourceParts": "-",
        "Dir::State::Lists": str(state.lists),
        "Dir::State::Status": "/dev/null",
        "Dir::Cache": str(state.cache),
        "Dir::Cache::Archives": str(state.cache / "archives"),
        # Debian's docker images blank these (apt.conf.d/docker-clean); without a saved package
        # cache every apt-cache call re-parses all lists (~1 s each).
        "Dir::Cache::pkgcache": "pkgcache.bin",
        "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
        # The host's pins must not pick versions for us.
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": str(state.preferences_parts),
        "APT::Architecture": ARCH,
        "APT::Architectures": ARCH,
        "Acquire::Languages": "none",
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
    }
    if as_root:
        # apt drops to _apt for downloads; _apt cannot enter a cache under /root (mode 0700), and
        # apt then only warns and continues unsandboxed. Say so explicitly instead.
        opts["APT::Sandbox::User"] = "root"
    out: list[str] = []
    for key, value in opts.items():
        out += ["-o", f"{key}={value}"]
    return out


def update_argv(state: AptState, *, as_root: bool) -> list[str]:
    return ["apt-get", "-q", *apt_options(state, as_root=as_root), "update"]


def pkgnames_argv(state: AptState, prefix: str, *, as_root: bool) -> list[str]:
    return ["apt-cache", *apt_options(state, as_root=as_root), "pkgnames", prefix]


def show_argv(state: AptState, packages: Sequence[str], *, as_root: bool) -> list[str]:
    # --no-all-versions: only the candidate (what `apt-get download name` would fetch).
    return ["apt-cache", *apt_options(state, as_root=as_root), "show", "--no-all-versions", *packages]


def download_argv(state: AptState, pins: Sequence[tuple[str, str]], *, as_root: bool) -> list[str]:
    """apt-get download name=version ...; files land in the working directory."""
    return [
        "apt-get",
        "-q",
        *apt_options(state, as_root=as_root),
        "download",
        *(f"{name}={version}" for name, version in pins),
    ]


def unpack_argv(deb: Path, dest: Path) -> list[str]:
    return ["dpkg-deb", "-x", str(deb), str(dest)]


def needs_update(stamp_mtime: float | None, now: float, max_age_hours: float) -> bool:
    """True when the lists were never fetched or are older than `max_age_hours`."""
    return stamp_mtime is None or now - stamp_mtime > max_age_hours * 3600.0


def parse_pkgnames(output: str) -> list[str]:
    return sorted({line.strip() for line in output.splitlines() if line.strip()})


@dataclass(frozen=True)
class Stanza:
    package: str
    version: str
    depends: str = ""


def parse_show(output: str) -> list[Stanza]:
    """Package/Version/Depends of each stanza of `apt-cache show` output."""
    stanzas: list[Stanza] = []
    for block in output.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue  # continuation lines (descriptions) carry nothing we need
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" in fields and "Version" in fields:
            stanzas.append(Stanza(fields["Package"], fields["Version"], fields.get("Depends", "")))
    return stanzas


def run_apt(argv: Sequence[str], *, cwd: Path | None = None) -> str:
    """Run one apt command; FetchError with its output on failure. Returns stdout."""
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise FetchError(f"{short_command(argv)} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def short_command(argv: Sequence[str]) -> str:
    """The command without its -o options, for messages."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-o":
            skip = True
        else:
            words.append(arg)
    return " ".join(words)
