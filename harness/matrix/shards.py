"""Which cells a shard runs (pure): `--shard K/N` on N machines covers every cell exactly once.

Without durations the cells are dealt in id order, round robin: the same cells give the same shards
on every machine and every night. With the durations a previous matrix recorded (`--baseline`), the
longest cells are placed first, each on the shard with the least work so far (ties to the lower
shard): balanced, and still a function of the cell ids and those durations only.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from harness.matrix.document import Shard


def assign(
    cell_ids: Sequence[str], total: int, durations: Mapping[str, float] | None = None
) -> list[list[str]]:
    """The cells of each of `total` shards, each shard's list in id order."""
    if total < 1:
        raise ValueError(f"{total} shards: need at least 1")
    ids = sorted(set(cell_ids))
    shards: list[list[str]] = [[] for _ in range(total)]
    known = {i: d for i, d in (durations or {}).items() if i in ids and d > 0}
    if not known:
        for n, cell in enumerate(ids):
            shards[n % total].append(cell)
        return shards
    # A cell the baseline did not have (a new topology) weighs what a typical cell did.
    typical = statistics.median(known.values())
    weight = {cell: known.get(cell, typical) for cell in ids}
    load = [0.0] * total
    for cell in sorted(ids, key=lambda c: (-weight[c], c)):
        target = min(range(total), key=lambda s: (load[s], s))
        shards[target].append(cell)
        load[target] += weight[cell]
    return [sorted(s) for s in shards]


def shard_cells(
    cell_ids: Sequence[str], shard: Shard, durations: Mapping[str, float] | None = None
) -> set[str]:
    return set(assign(cell_ids, shard.total, durations)[shard.index - 1])
