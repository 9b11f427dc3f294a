"""What run_cell does for `--kselftest NAME`: before boot, build each directory and tell the guest
(manifest.json); after the VM, turn the guest's raw outputs into records in place of the wrapper tests'
records (guest_tests/test_kselftest.py runs one wrapper test per binary)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.kernels.kimage import KernelImage
from harness.kselftest.build import build_selftest
from harness.kselftest.catalog import selftest
from harness.kselftest.manifest import (
    ManifestEntry,
    output_paths,
    read_manifest,
    status_from_json,
    write_manifest,
)
from harness.kselftest.records import read_text, selftest_records
from harness.results.model import TestRecord
from harness.topology.model import Topology

Progress = Callable[[str], None]
WRAPPER_FILE = "test_kselftest.py"


def wrapper_name(name: str, binary: str) -> str:
    """The node id of the guest's wrapper test of one binary."""
    return f"{WRAPPER_FILE}::test_kselftest[{name}/{binary}]"


def prepare_kselftests(
    names: Sequence[str], kernel: KernelImage, topo: Topology, run_dir: Path, progress: Progress
) -> list[ManifestEntry]:
    """Build each selftest for `kernel` (cached) and write the guest's manifest; [] when none asked."""
    entries: list[ManifestEntry] = []
    for name in dict.fromkeys(names):
        spec = selftest(name)
        built = build_selftest(kernel, name, progress)
        how = "cached" if built.cached else f"built in {built.seconds:.1f} s"
        progress(f"kselftest {name}: {'ok' if built.ok else 'does not build'} ({how})")
        device = next((d.id for d in topo.devices if d.kind == spec.device), None) if spec.device else None
        entries.append(
            ManifestEntry(
                name=name,
                built=built.ok,
                out_dir=str(built.out_dir),
                binaries=built.binaries,
                build_message=built.message,
                device=device,
                hugepages_2m=spec.hugepages_2m,
                hugepages_1g=spec.hugepages_1g,
                module_params=spec.module_params,
                timeouts={b: spec.timeout_for(b) for b in built.binaries},
            )
        )
    if entries:
        write_manifest(run_dir, entries)
    return entries


def kselftest_records(records: Sequence[TestRecord], run_dir: Path) -> list[TestRecord]:
    """`records` with each finished binary's wrapper record replaced by the records of its output, and
    each directory that did not build as a failed record. Unchanged when the cell ran no selftests."""
    entries = read_manifest(run_dir)
    if not entries:
        return list(records)
    produced: list[TestRecord] = []
    replaced: set[str] = set()
    for entry in entries:
        outputs = {}
        for binary in entry.binaries:
            out, status_file = output_paths(run_dir, entry.name, binary)
            if not status_file.is_file():
                continue  # never finished: the wrapper's record (error, interrupted) stays
            status = status_from_json(json.loads(status_file.read_text()))
            outputs[binary] = (read_text(out), status, str(out))
            replaced.add(wrapper_name(entry.name, binary))
        produced += selftest_records(entry, outputs)
    kept = [r for r in records if r.name not in replaced]
    return kept + produced
