"""Which cells a matrix has and what each is called (pure).

A cell's id is its directory name inside the matrix directory and its key everywhere else (resume,
shards, merge, comparison): the same topology variant and kernel give the same id on every run and
every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.rundir import slug
from harness.topology import Topology

# Each cell directory keeps the machine it booted (Topology.model_dump(mode="json")), so a page drawn
# from the matrix directory alone shows the variant that ran, on any machine.
TOPOLOGY_FILE = "topology.json"
# Not in slug()'s output, so "<topology>__<kernel>" always splits back in one way.
ID_SEPARATOR = "__"


def cell_id(topology: str, kernel_label: str) -> str:
    return f"{slug(topology)}{ID_SEPARATOR}{slug(kernel_label)}"


@dataclass(frozen=True)
class CellSpec:
    """One planned cell. `topology` is the machine to boot (an --axis variant has its own name),
    `given` the topology as the user named it (for reproduce.sh), `axes` what the variant changed."""

    topology: Topology
    given: str
    kernel_spec: str
    kernel_label: str
    axes: tuple[tuple[str, str], ...] = field(default=())

    @property
    def id(self) -> str:
        return cell_id(self.topology.name, self.kernel_label)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "topology": self.topology.name,
            "given": self.given,
            "kernel": self.kernel_label,
            "axes": dict(self.axes),
        }


def plan_cells(
    variants: Sequence[tuple[str, Topology, tuple[tuple[str, str], ...]]],
    kernels: Sequence[tuple[str, str]],
) -> list[CellSpec]:
    """Every (given, variant, axes) x (spec, label), kernel-major as the runs go (each kernel's cells
    together), each id once: two --topology flags naming the same file are one cell."""
    cells: dict[str, CellSpec] = {}
    for spec, label in kernels:
        for given, topo, axes in variants:
            cell = CellSpec(topo, given, spec, label, axes)
            cells.setdefault(cell.id, cell)
    return list(cells.values())


def axes_columns(cells: Sequence[CellSpec]) -> dict[str, list[str]]:
    """The matrix's axes, each with its values in first-seen order: topology and kernel always, and
    every --axis key that some cell set."""
    columns: dict[str, list[str]] = {"topology": [], "kernel": []}
    for cell in cells:
        values = {"topology": cell.topology.name, "kernel": cell.kernel_label, **dict(cell.axes)}
        for key, value in values.items():
            column = columns.setdefault(key, [])
            if value not in column:
                column.append(value)
    return columns
