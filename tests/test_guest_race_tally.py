"""guest_tests/hil_fault/race.py: seeded per-thread choices, outcome tallies and their verdict."""

from __future__ import annotations

import sys
from pathlib import Path

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
if str(GUEST_TESTS) not in sys.path:
    sys.path.insert(0, str(GUEST_TESTS))

from hil_fault.race import ALLOWED, OK, Tally, errno_name, thread_rng, too_idle, unexpected  # noqa: E402


def test_thread_rng_is_reproducible_per_seed_and_name() -> None:
    a = [thread_rng(7, "mapper-0").random() for _ in range(3)]
    b = [thread_rng(7, "mapper-0").random() for _ in range(3)]
    assert a == b
    assert thread_rng(7, "mapper-0").random() != thread_rng(7, "mapper-1").random()
    assert thread_rng(7, "mapper-0").random() != thread_rng(8, "mapper-0").random()
    # The value does not depend on hash randomisation: fixed for a fixed seed and name.
    assert round(thread_rng(20261130, "revoker").random(), 12) == round(
        thread_rng(20261130, "revoker").random(), 12
    )


def test_tally_merge_and_total() -> None:
    one, two = Tally(), Tally()
    one.add("map", OK)
    one.add("map", "ENODEV")
    two.add("map", OK)
    two.add("unmap", "ENODATA")
    one.merge(two)
    assert one.counts == {"map": {"ok": 2, "ENODEV": 1}, "unmap": {"ENODATA": 1}}
    assert one.total("map") == 2 and one.total("detach") == 0


def test_unexpected_names_what_no_revocation_explains() -> None:
    tally = Tally()
    for action, outcome in [
        ("map", "ENODEV"),
        ("map", "EINVAL"),
        ("unmap", "ENODATA"),
        ("detach", "ENOENT"),
        ("attach", "ENOMEM"),
        ("attach", "ENOMEM"),
        ("reset", "EAGAIN"),
    ]:
        tally.add(action, outcome)
    assert unexpected(tally) == ["attach: ENOMEM x2", "detach: ENOENT x1"]
    assert "vfio_pci_dma_buf_map" in ALLOWED["map"]["ENODEV"]


def test_too_idle() -> None:
    tally = Tally()
    tally.add("map", OK)
    assert too_idle(tally, {"map": 1, "memory-toggle": 1}) == ["memory-toggle: 0 successes, needed 1"]


def test_errno_name() -> None:
    assert errno_name(19) == "ENODEV"
    assert errno_name(None) == "0"


def test_copy_verdict_follows_the_last_copy_where_nothing_fences_the_device() -> None:
    from hil_fault.race import CopyHistory, copy_verdict

    seed, zeros, guard = b"\x5a" * 64, bytes(64), bytes(16)
    # switch-p2p-pt, seen in the debug matrix: a valid copy, then one caught by a revocation that
    # read zeros from the reset BAR and wrote them last. Nothing fences a bus address: that is right.
    assert copy_verdict(CopyHistory(1, False, fenced=False), 0x700020, seed, zeros, guard) == (False, [])
    # Through the IOMMU the caught copy faults: the valid one must be what the BAR holds.
    must, broken = copy_verdict(CopyHistory(1, False, fenced=True), 0x700020, seed, zeros, guard)
    assert must and broken == [
        "wrong data: 1 copies (a fenced route) ran through a mapping valid throughout, but the BAR at "
        "0x700020 does not hold the seed"
    ]
    must, broken = copy_verdict(CopyHistory(3, True, fenced=False), 0x700020, seed, zeros, guard)
    assert must and broken[0].startswith("wrong data: the last copy ran through a mapping valid")
    assert copy_verdict(CopyHistory(3, True, fenced=False), 0x700020, seed, seed, guard) == (True, [])
    garbage = b"\xff" * 64
    assert copy_verdict(CopyHistory(0, None, fenced=False), 0x700020, seed, garbage, guard)[1] == [
        "wrong data: the BAR at 0x700020 holds neither the seed nor zeros"
    ]
    assert copy_verdict(CopyHistory(0, None, False), 0x700020, seed, seed, b"\x01" + bytes(15))[1] == [
        "wrong data: bytes around 0x700020 changed"
    ]
