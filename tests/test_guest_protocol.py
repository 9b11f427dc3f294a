"""harness.guest.protocol: frames as the host's console scanner (harness.console.events) reads them."""

from __future__ import annotations

import pytest

from harness.console.events import MalformedMarker, Marker, MarkerKind, scan
from harness.guest.protocol import KINDS, encode_frame


def markers(text: str, token: str) -> list[tuple[str, dict[str, object]]]:
    events = scan(text, token)
    assert not [e for e in events if isinstance(e, MalformedMarker)]
    return [(e.kind, e.payload) for e in events if isinstance(e, Marker)]


def test_exact_text() -> None:
    line = encode_frame("ab12", "test", {"name": "t.py::x", "outcome": "passed", "duration": 0.5})
    assert line == '@@HIL:ab12:test:{"name":"t.py::x","outcome":"passed","duration":0.5}@@\n'


def test_kinds_are_those_the_host_accepts() -> None:
    from harness.console.events import MARKER_KINDS

    kinds: tuple[MarkerKind, ...] = ("start", "collected", "begin", "test", "done")
    assert kinds == KINDS == MARKER_KINDS


def test_at_signs_and_newlines_cannot_break_a_frame() -> None:
    name = "t.py::x[a@@b\n@@HIL:ab12:done:{}@@]"
    line = encode_frame("ab12", "test", {"name": name, "outcome": "passed"})
    assert line.count("@@") == 2 and line.count("\n") == 1
    assert markers(line, "ab12") == [("test", {"name": name, "outcome": "passed"})]


def test_read_back_mid_line_among_kernel_messages() -> None:
    console = (
        "[   47.500000] vfio-pci 0000:03:00.0: resetting\n"
        + "."
        + encode_frame("ab12", "test", {"name": "a", "outcome": "passed", "duration": 1})
        + encode_frame("ffff", "test", {"name": "another run"})
        + encode_frame("ab12", "done", {"status": "finished", "exit_code": 0, "elapsed": 3.5})
    )
    assert markers(console, "ab12") == [
        ("test", {"name": "a", "outcome": "passed", "duration": 1}),
        ("done", {"status": "finished", "exit_code": 0, "elapsed": 3.5}),
    ]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown frame kind"):
        encode_frame("ab12", "progress", {})
