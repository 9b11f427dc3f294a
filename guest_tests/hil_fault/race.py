"""The race tests' bookkeeping: seeded per-thread randomness, outcome tallies, the errnos each action
may legitimately give while revocations race it, and the verdict on what was seen (pure)."""

from __future__ import annotations

import errno
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SECONDS = 10.0
DEFAULT_SEED = 20261130
# After the time is up each thread finishes its current action; one that has not after this long is
# stuck (in the kernel: the revoking writer waits without timeout, vfio_pci_dma_buf_move).
JOIN_GRACE_S = 30.0

OK = "ok"
# Why each errno is legitimate under revocation, per action (v7.2 sources):
ALLOWED: Mapping[str, Mapping[str, str]] = {
    # vfio_pci_dma_buf_attach: revoked -> ENODEV
    "attach": {"ENODEV": "the buffer is revoked (vfio_pci_dma_buf_attach)"},
    # vfio_pci_dma_buf_map: revoked -> ENODEV; dma_buf_phys_vec_to_sgt: refused route -> EINVAL
    "map": {
        "ENODEV": "the buffer is revoked (vfio_pci_dma_buf_map)",
        "EINVAL": "the route is refused (dma_buf_phys_vec_to_sgt)",
    },
    # hil_unmap: the revocation callback already unmapped -> ENODATA
    "unmap": {"ENODATA": "the revocation callback unmapped first (hil_revoke)"},
    "detach": {},
    # the exporter closed for good: new buffers come from the reopened device
    "export": {},
    "memory-toggle": {},
    # vfio_pci_ioctl_reset -> pci_try_reset_function: EAGAIN when the device lock is contended
    "reset": {"EAGAIN": "the device lock was held (pci_try_reset_function)"},
    "close-reopen": {},
    # a DMA through a mapping revoked meanwhile faults in the IOMMU; the engine still completes
    "edu-copy": {},
    "edu-valid-copy": {},
}


def thread_rng(seed: int, name: str) -> random.Random:
    """Each thread's own generator: the same seed and name give the same choices (str seeding is
    deterministic, unlike hash())."""
    return random.Random(f"{seed}:{name}")


@dataclass
class Tally:
    """Outcomes per action: {"map": {"ok": 12, "ENODEV": 3}}."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, action: str, outcome: str) -> None:
        per = self.counts.setdefault(action, {})
        per[outcome] = per.get(outcome, 0) + 1

    def merge(self, other: Tally) -> None:
        for action, per in other.counts.items():
            for outcome, count in per.items():
                for _ in range(count):
                    self.add(action, outcome)

    def total(self, action: str, outcome: str = OK) -> int:
        return self.counts.get(action, {}).get(outcome, 0)


def errno_name(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err or 0))


def unexpected(tally: Tally, allowed: Mapping[str, Mapping[str, str]] = ALLOWED) -> list[str]:
    """Outcomes no revocation explains, as "action: ERRNO x count" (pure)."""
    out: list[str] = []
    for action, per in sorted(tally.counts.items()):
        ok = allowed.get(action, {})
        for outcome, count in sorted(per.items()):
            if outcome != OK and outcome not in ok:
                out.append(f"{action}: {outcome} x{count}")
    return out


def too_idle(tally: Tally, needed: Mapping[str, int]) -> list[str]:
    """Actions that did not succeed at least the needed number of times: a race that never raced
    proves nothing (pure)."""
    return [f"{action}: {tally.total(action)} successes, needed {count}"
            for action, count in needed.items() if tally.total(action) < count]  # fmt: skip


def summary(seed: int, seconds: float, tally: Tally, broken: list[str]) -> dict[str, Any]:
    return {"seed": seed, "seconds": seconds, "outcomes": tally.counts, "broken": broken}


@dataclass(frozen=True)
class CopyHistory:
    """What the race's edu copier did: copies through a mapping valid throughout, whether the last copy
    that moved bytes was one, and whether the route is fenced (translated by the IOMMU, so that a copy
    caught by a revocation faults instead of landing)."""

    valid_copies: int
    last_valid: bool | None
    fenced: bool


def copy_verdict(
    history: CopyHistory, dest: int, seed: bytes, got: bytes, guard: bytes
) -> tuple[bool, list[str]]:
    """(whether the destination must hold the seed, what is wrong) from the bytes read back (pure).

    It must when the last copy was valid, or any was on a fenced route. Otherwise a copy caught by a
    revocation may have landed last: where nothing fences the device it reads zeros from a BAR with
    memory off or in reset (QEMU's unassigned reads) and writes them, so the seed or zeros are right."""
    must_hold = bool(history.last_valid) or (history.fenced and history.valid_copies > 0)
    broken = []
    if must_hold and got != seed:
        why = "the last copy" if history.last_valid else f"{history.valid_copies} copies (a fenced route)"
        broken.append(f"wrong data: {why} ran through a mapping valid throughout, but the BAR at "
                      f"{dest:#x} does not hold the seed")  # fmt: skip
    elif not must_hold and got not in (seed, bytes(len(seed))):
        broken.append(f"wrong data: the BAR at {dest:#x} holds neither the seed nor zeros")
    if guard != bytes(len(guard)):
        broken.append(f"wrong data: bytes around {dest:#x} changed")
    return must_hold, broken
