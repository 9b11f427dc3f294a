from __future__ import annotations

from harness.results.timeline import Mark, Timeline, breakdown_line, marks_from_json, phases


def test_phases_are_the_spans_between_marks_seen() -> None:
    t = Timeline()
    for name, at in (("host_start", 0.0), ("qemu_start", 0.2), ("guest_command", 6.2), ("python_up", 8.0)):
        t.mark(name, at)
    assert phases(t.marks()) == [("launch", 0.2), ("firmware+kernel", 6.0), ("python", 1.8)]


def test_a_replayed_mark_keeps_its_first_time_but_per_test_marks_repeat() -> None:
    t = Timeline()
    t.mark("python_up", 1.0)
    t.mark("python_up", 5.0)
    t.mark("test_begin", 2.0, "a")
    t.mark("test_begin", 3.0, "b")
    assert t.at("python_up") == 1.0
    assert [m.detail for m in t.marks() if m.name == "test_begin"] == ["a", "b"]
    assert marks_from_json(t.to_json()) == list(t.marks())


def test_the_breakdown_names_what_a_dead_guest_never_reached() -> None:
    marks = [Mark("host_start", 0.0), Mark("qemu_start", 0.1), Mark("guest_command", 5.0)]
    marks.append(Mark("vm_stopped", 9.0))
    line = breakdown_line(marks)
    assert line.startswith("launch 0.1 s | firmware+kernel 4.9 s = 9.0 s")
    assert "not reached: python, collect, tests, power-off, host" in line
