"""`hil merge`: shard directories -> the matrix directory one run of all their cells would have written.

The cells' directories are copied (the shards stay as they were: nothing is lost if the merge is
redone), then the aggregate files are written from the copies' results.json, as a run writes them.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.matrix.aggregate import write_aggregate
from harness.matrix.compare import Comparison
from harness.matrix.document import Matrix, collect
from harness.matrix.session import EARLIER
from harness.rundir import claim_out_dir


def merged_plan(shards: Sequence[Matrix]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Every shard's planned cells in the whole matrix's order, cells of a shard that is absent as bare
    ids (so the merged matrix lists them as missing), and the union of the axes. Refuses shards of
    different matrices and a cell planned by two shards."""
    wholes = {tuple(s.whole) for s in shards}
    if len(wholes) > 1:
        raise ConfigError(
            "the directories are shards of different matrices (their 'whole' lists differ)", "DIR"
        )
    owner: dict[str, Path] = {}
    specs: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for spec in shard.planned:
            if spec["id"] in owner:
                raise ConfigError(f"cell {spec['id']} is in both {owner[spec['id']]} and {shard.dir}", "DIR")
            owner[spec["id"]] = shard.dir
            specs[spec["id"]] = spec
    order = list(wholes.pop()) or list(specs)
    planned = [specs.get(cell_id, {"id": cell_id}) for cell_id in order]
    axes: dict[str, list[str]] = {}
    for shard in shards:
        for key, values in shard.axes.items():
            column = axes.setdefault(key, [])
            column.extend(v for v in values if v not in column)
    return planned, axes


def merge(
    shards: Sequence[Matrix], out: Path, command: Sequence[str], baseline: Matrix | None = None
) -> tuple[Matrix, Comparison | None]:
    planned, axes = merged_plan(shards)
    claim_out_dir(out)
    for shard in shards:
        for spec in shard.planned:
            for source in [shard.dir / spec["id"], *sorted(shard.dir.glob(f"{spec['id']}{EARLIER}*"))]:
                if source.is_dir():
                    shutil.copytree(source, out / source.name, symlinks=True)
    matrix = collect(out, planned, axes)
    return matrix, write_aggregate(matrix, command, baseline)
