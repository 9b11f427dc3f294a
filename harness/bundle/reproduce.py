"""The pieces of `hil reproduce` that decide anything: the cell to run from a bundle, the differences
between the original host and this one, and the test-by-test comparison of outcomes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from harness.bundle import manifest as m
from harness.bundle.read import Bundle
from harness.bundle.script import HarnessCommand, harness_options
from harness.errors import ConfigError
from harness.kernels.spec import ImageFile, LocalTree, parse_spec
from harness.results.model import TestRecord, Verdict
from harness.topology import Topology, topology_sha256
from harness.topology.axes import variant_from_json


@dataclass(frozen=True)
class Reproduction:
    """The cell to run here: the machine that ran (from topology.json), how reports name it, the kernel."""

    topology: Topology
    topology_given: str  # a file in the work directory: the original YAML when it still makes the machine
    kernel_spec: str
    series: Path | None
    select: str | None
    axes: tuple[tuple[str, str], ...]
    timeout: float
    options: HarnessCommand  # the rest of the original `hil run` line (kernel variant, kselftests, ...)


def reproduction(bundle: Bundle, work: Path, kernel: str | None = None) -> Reproduction:
    """The cell of `bundle`, its input files copied into `work` (they outlive the bundle's temporary
    directory: the new cell's reproduce.sh names them). `kernel` replaces the bundle's kernel spec."""
    man = bundle.manifest
    where = str(bundle.path)
    try:
        topo = variant_from_json(json.loads(bundle.member(m.TOPOLOGY_JSON).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"topology.json is not a topology: {exc}", where) from None
    if topology_sha256(topo) != man.topology_sha256:
        raise ConfigError(
            "topology.json is not the machine the manifest names (topology_sha256 differs)", where
        )
    if "--series" in man.hil_command and man.series is None:
        raise ConfigError("the cell ran with a patch series that is not in the bundle (see its notes)", where)
    spec = kernel or man.kernel_spec
    _check_kernel_here(spec, man, where, given=kernel is not None)
    work.mkdir(parents=True, exist_ok=True)
    given = work / m.TOPOLOGY_JSON
    shutil.copyfile(bundle.member(m.TOPOLOGY_JSON), given)
    axes = tuple(man.axes.items())
    if man.topology_yaml is not None and man.topology_yaml_matches:
        # The file as it was given, with the same --axis: the new cell's reproduce.sh says that
        given = work / Path(man.topology_yaml).name
        shutil.copyfile(bundle.member(man.topology_yaml), given)
    elif axes:
        axes = ()  # topology.json is the variant already; applying the axes again would rename it
    series = None
    if man.series is not None:
        series = work / Path(man.series).name  # the same name: the kernel label stays the same
        shutil.copyfile(bundle.member(man.series), series)
    options = harness_options(man.hil_command, where)
    return Reproduction(topo, str(given), spec, series, man.select, axes, man.timeout, options)


def _check_kernel_here(spec: str, man: m.Manifest, where: str, *, given: bool) -> None:
    """A kernel the bundle names by a path of the original host needs one here (never a silent swap)."""
    parsed = parse_spec(spec)
    hint = (
        ""
        if given
        else f"; give --kernel with this host's equivalent of {man.environment.kernel_source or spec}"
    )
    if isinstance(parsed, LocalTree) and not parsed.path.is_dir():
        raise ConfigError(f"the kernel tree {parsed.path} is not on this host{hint}", where)
    if isinstance(parsed, ImageFile) and not parsed.path.is_file():
        raise ConfigError(f"the kernel image {parsed.path} is not on this host{hint}", where)


_LABELS = {
    "qemu_version": "QEMU version",
    "accelerator": "accelerator",
    "host_kernel": "host kernel",
    "harness_version": "p2p-hil version",
    "git_revision": "p2p-hil revision",
    "git_dirty": "p2p-hil checkout has uncommitted changes",
    "guest_sources_sha256": "guest test sources (harness/guest, guest_tests)",
    "known_issues_sha256": "kernels/known-issues.yaml",
    "kernel_version": "kernel version (uname -r)",
    "kernel_source": "kernel source identity",
}


def environment_differences(manifest: m.Manifest, here: m.Environment) -> list[str]:
    """One line per fact that differs between the original run and this host (the host's name does not
    count: a reproduction elsewhere is the point). Facts unknown on either side are not compared."""
    was = manifest.environment
    lines = []
    for f in fields(m.Environment):
        if f.name not in _LABELS:
            continue
        old, new = getattr(was, f.name), getattr(here, f.name)
        if old in (None, "") or new in (None, "") or old == new:
            continue
        if f.name.endswith("sha256"):
            lines.append(f"{_LABELS[f.name]} differ from the original run's")
        elif f.name == "git_dirty":
            lines.append(f"{_LABELS[f.name]}: was {'yes' if old else 'no'}, now {'yes' if new else 'no'}")
        else:
            lines.append(f"{_LABELS[f.name]}: was {old}, now {new}")
    return lines


# A flaky test failed and then passed in the original run: either outcome reproduces it.
_SAME = {"flaky": {"flaky", "passed", "failed"}}


def outcome_comparison(
    original: Sequence[TestRecord],
    new: Sequence[TestRecord],
    *,
    verdicts: tuple[Verdict, Verdict] | None = None,
) -> tuple[str, bool]:
    """Test by test: reproduced, differs (was X, now Y), missing (not run this time), new (not in the
    original); then a summary. Reproduced when no original outcome differs or is missing and the
    verdict (when given) is the same; a new test alone does not break a reproduction."""
    now = {r.name: r.outcome for r in new}
    before = {r.name: r.outcome for r in original}
    rows: list[tuple[str, str]] = []
    counts = {"reproduced": 0, "differs": 0, "missing": 0, "new": 0}
    for name, outcome in before.items():
        if name not in now:
            rows.append((name, f"missing (was {outcome})"))
            counts["missing"] += 1
        elif now[name] == outcome or now[name] in _SAME.get(outcome, set()):
            rows.append((name, f"reproduced ({now[name]})"))
            counts["reproduced"] += 1
        else:
            rows.append((name, f"differs (was {outcome}, now {now[name]})"))
            counts["differs"] += 1
    for name, outcome in now.items():
        if name not in before:
            rows.append((name, f"new ({outcome})"))
            counts["new"] += 1
    width = max((len(name) for name, _ in rows), default=0)
    lines = [f"{name:<{width}}  {status}" for name, status in rows]
    ok = counts["differs"] == 0 and counts["missing"] == 0
    summary = (
        f"{counts['reproduced']} of {len(before)} outcomes reproduced, {counts['differs']} differ, "
        f"{counts['missing']} missing, {counts['new']} new"
    )
    if verdicts is not None:
        old_v, new_v = verdicts
        summary += f"; verdict was {old_v.value}, now {new_v.value}"
        ok = ok and old_v is new_v
    lines.append(summary)
    lines.append("reproduced" if ok else "NOT reproduced")
    return "\n".join(lines), ok
