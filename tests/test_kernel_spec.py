from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kernels.spec import DebianImage, DebianSource, ImageFile, LocalTree, parse_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("debian:7.2", DebianImage("7.2")),
        ("debian:7.2.13", DebianImage("7.2", 13)),
        ("debian:6.12", DebianImage("6.12")),
        ("src:debian-7.2", DebianSource("7.2")),
        ("src:debian-7.3", DebianSource("7.3")),
        ("tree:/home/me/linux", LocalTree(Path("/home/me/linux"))),
        ("/boot/vmlinuz-6.1.0-28-amd64", ImageFile(Path("/boot/vmlinuz-6.1.0-28-amd64"))),
        ("out/arch/x86/boot/bzImage", ImageFile(Path("out/arch/x86/boot/bzImage"))),
        ("bzImage", ImageFile(Path("bzImage"))),
        ("./vmlinuz", ImageFile(Path("./vmlinuz"))),
    ],
)
def test_accepted_forms(text: str, expected: object) -> None:
    assert parse_spec(text) == expected


def test_series_and_fragments_attach_to_built_specs() -> None:
    spec = parse_spec("src:debian-7.2", series=Path("fix.mbox"), fragments=("debug",))
    assert spec == DebianSource("7.2", Path("fix.mbox"), ("debug",))
    tree = parse_spec("tree:/src/linux", series=Path("s.mbox"))
    assert isinstance(tree, LocalTree) and tree.patch_series == Path("s.mbox")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "debian:",
        "debian:7",
        "debian:latest",
        "src:7.2",
        "src:debian-7",
        "src:ubuntu-7.2",
        "tree:",
        "foo:bar",
        "http:7.2",
        "linux",
    ],
)
def test_bad_specs_name_the_spec_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    message = str(info.value)
    assert repr(text) in message
    assert (
        "debian:<major.minor>" in message
        and "src:debian-<major.minor>" in message
        and "tree:<path>" in message
    )


@pytest.mark.parametrize("text", ["debian:7.2", "/boot/vmlinuz"])
def test_a_series_on_a_ready_image_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="src: or tree:"):
        parse_spec(text, series=Path("x.mbox"))
    with pytest.raises(ConfigError, match="src: or tree:"):
        parse_spec(text, fragments=("debug",))


def test_str_round_trips() -> None:
    for text in ("debian:7.2", "debian:7.2.13", "src:debian-7.3", "tree:/a/b"):
        assert str(parse_spec(text)) == text
