from __future__ import annotations

from pathlib import Path

from harness.kernels import apt, debver
from harness.kernels.debian import Release, pick_release
from harness.kernels.spec import DebianImage

STATE = apt.AptState(Path("/c/apt/sid"), ("sid",))


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_suites_per_series() -> None:
    assert apt.suites_for("7.2") == ("sid",)
    assert set(apt.suites_for("7.3")) == {"trixie-backports", "experimental"}
    assert "bookworm" in apt.suites_for("6.1") and "trixie" in apt.suites_for("6.12")
    assert "bookworm" in apt.suites_for("6.6") and "trixie" in apt.suites_for("6.6")
    assert apt.AptState.for_series(Path("/c/apt"), "7.3").root.name == "trixie-backports+experimental"


def test_sources_list_is_signed_and_uses_the_security_archive_for_security_suites() -> None:
    text = apt.sources_list_text(["sid", "bookworm-security"])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://deb.debian.org/debian sid main",
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://deb.debian.org/debian-security bookworm-security main",
    ]


def test_every_apt_call_is_confined_to_the_private_state() -> None:
    for argv in (
        apt.update_argv(STATE, as_root=False),
        apt.pkgnames_argv(STATE, "linux-binary-7.2", as_root=False),
        apt.show_argv(STATE, ["a"], as_root=False),
        apt.download_argv(STATE, [("a", "1")], as_root=False),
    ):
        opts = _opts(argv)
        assert opts["Dir::Etc::SourceList"] == "/c/apt/sid/sources.list"
        assert opts["Dir::Etc::SourceParts"] == "-"
        assert opts["Dir::State::Lists"] == "/c/apt/sid/lists"
        assert opts["Dir::State::Status"] == "/dev/null"
        assert opts["Dir::Cache"] == "/c/apt/sid/cache"
        assert opts["Dir::Etc::Preferences"] == "/dev/null"
        assert "APT::Sandbox::User" not in opts
        assert all(isinstance(a, str) for a in argv)  # argv lists, never shell strings
    assert apt.update_argv(STATE, as_root=False)[-1] == "update"
    assert apt.download_argv(STATE, [("linux-binary-x", "7.2.13-1")], as_root=False)[-2:] == [
        "download",
        "linux-binary-x=7.2.13-1",
    ]
    assert _opts(apt.update_argv(STATE, as_root=True))["APT::Sandbox::User"] == "root"


def test_update_at_most_once_per_period() -> None:
    assert apt.needs_update(None, 1000.0, 12)
    assert not apt.needs_update(1000.0, 1000.0 + 3600, 12)
    assert apt.needs_update(1000.0, 1000.0 + 13 * 3600, 12)


def test_short_command_drops_options() -> None:
    assert (
        apt.short_command(apt.pkgnames_argv(STATE, "linux-base", as_root=True))
        == "apt-cache pkgnames linux-base"
    )


SHOW = """Package: linux-binary-7.2.13+deb14-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Depends: linux-base-7.2.13+deb14-amd64 (= 7.2.13-1)
Description: Linux 7.2.13 for 64-bit PCs (kernel image)
 This package contains the kernel image.
 Version: not a field

Package: linux-binary-7.2.9+deb14-amd64
Version: 7.2.9-2

Package: linux-binary-7.2.13+deb14-cloud-amd64
Version: 7.2.13-1

Package: linux-image-7.2.13+deb14-amd64
Version: 7.2.13-1
Depends: linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-image-7.2.13+deb14-amd64-dbg
Version: 7.2.13-1
"""
NAMES = {
    "linux-binary-7.2.13+deb14-amd64",
    "linux-binary-7.2.9+deb14-amd64",
    "linux-binary-7.2.13+deb14-cloud-amd64",
    "linux-image-7.2.13+deb14-amd64",
    "linux-image-7.2.13+deb14-amd64-dbg",
    "linux-modules-7.2.13+deb14-amd64",
    "linux-modules-7.2.9+deb14-amd64",
    "linux-base-7.2.13+deb14-amd64",
}


def test_parse_show_ignores_description_lines() -> None:
    stanzas = apt.parse_show(SHOW)
    assert [s.package for s in stanzas][:2] == [
        "linux-binary-7.2.13+deb14-amd64",
        "linux-binary-7.2.9+deb14-amd64",
    ]
    assert stanzas[0].version == "7.2.13-1"
    assert stanzas[0].depends.startswith("linux-base-")


def test_newest_7x_release_uses_binary_modules_and_base_packages() -> None:
    release = pick_release(DebianImage("7.2"), NAMES, apt.parse_show(SHOW))
    assert release == Release(
        "7.2.13+deb14-amd64",
        "7.2.13-1",
        (
            "linux-binary-7.2.13+deb14-amd64",
            "linux-modules-7.2.13+deb14-amd64",
            "linux-base-7.2.13+deb14-amd64",
        ),
    )


def test_pinned_sublevel() -> None:
    release = pick_release(DebianImage("7.2", 9), NAMES, apt.parse_show(SHOW))
    assert release is not None and release.release == "7.2.9+deb14-amd64"
    assert pick_release(DebianImage("7.2", 1), NAMES, apt.parse_show(SHOW)) is None


def test_old_layout_downloads_the_image_package() -> None:
    show = (
        "Package: linux-image-6.1.0-28-amd64\nVersion: 6.1.119-1\n\n"
        "Package: linux-image-6.1.0-27-amd64\nVersion: 6.1.115-1\n"
    )
    names = {"linux-image-6.1.0-28-amd64", "linux-image-6.1.0-27-amd64"}
    release = pick_release(DebianImage("6.1"), names, apt.parse_show(show))
    assert release == Release("6.1.0-28-amd64", "6.1.119-1", ("linux-image-6.1.0-28-amd64",))
    # 6.12.x must not answer a request for 6.1
    show12 = "Package: linux-image-6.12.9-amd64\nVersion: 6.12.9-1\n"
    assert pick_release(DebianImage("6.1"), {"linux-image-6.12.9-amd64"}, apt.parse_show(show12)) is None


def test_debian_version_order() -> None:
    ordered = ["7.3~rc7-1", "7.3-1", "7.3.4-1~bpo13+1", "7.3.4-1", "7.3.10-1", "1:6.0-1"]
    assert sorted(reversed(ordered), key=debver.sort_key) == ordered
    assert debver.compare("7.2.13-1", "7.2.13-1") == 0
    assert debver.compare("1.0a-1", "1.0-1") > 0 and debver.compare("1.0~a-1", "1.0-1") < 0
    assert debver.upstream("7.2.13-1") == "7.2.13" and debver.upstream("1:7.3~rc7-1") == "7.3~rc7"
