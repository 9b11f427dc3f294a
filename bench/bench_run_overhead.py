"""Where a cell's time goes, side by side: the boot floor, the raw vng run of the same guest work, and the
harness cell, with medians over repeated runs and the ratios the issue's targets are stated in.

- floor: `vng ... --exec true` with the cell's own kernel, memory, CPUs and topology QEMU arguments
  (the cell's reproduce.sh --raw command with the guest command replaced by `true`);
- raw: `sh reproduce.sh --raw`, the exact steps the harness ran underneath (scratch files, the vng
  command, the same plan) without the harness;
- hil: `./hil run --topology X --kernel K --out DIR`, wall time of the whole command.

Both sides run the same selection. A raw reproduction has no host agent (nothing answers QMP requests),
so tests that need one cannot run there: they are deselected on both sides (DESELECTED), the table says
so, and a run whose two sides did not end every test alike is flagged (the comparison would be unfair).
The tests' own time (pytest's durations) and, inside it, the wait for QEMU's edu DMA engine are shown
too: edu starts a transfer 100 ms of virtual time after the command (hw/misc/edu.c dma_rw), a fixed
cost per transfer that no plumbing can remove.

Runs are interleaved (hil, raw, floor, hil, ...) so that other load hits all alike; the
warm-up cell fetches or builds the kernel, builds the test modules and prepares the guest's byte-code,
as any second run would find them. Not a test: nothing here asserts.

    .venv/bin/python bench/bench_run_overhead.py [--runs 3] [--topology switch-p2p] [--kernel src:debian-7.2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Tests that need the host agent (QMP hot-unplug): a raw reproduction skips them (plan host_agent false).
DESELECTED = ("test_revoke_by_hot_unplug", "(test_iommufd_revocation_cuts_mapping and unplug)")
# A transfer in a record's details: hil_iommufd "... (buffer +0x0) 100.3 ms", hil_importer "... 100250 us".
TRANSFER = re.compile(r"\(buffer \+0x[0-9a-f]+\) (\d+(?:\.\d+)?) (ms|us)$")
FRAME = re.compile(r"@@HIL:\w+:(start|collected|done):(.*?)@@")
KERNEL_TS = re.compile(r"^\[\s*(\d+\.\d+)\]")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.monotonic() - t0, proc.returncode


def raw_steps(reproduce: Path) -> list[list[str]]:
    """The commands of reproduce.sh's --raw branch, in order (the last one is vng), without the shell's
    `trap` that removes scratch at exit (the bench removes it after each run itself)."""
    lines = reproduce.read_text().splitlines()
    start = lines.index('if [ "${1:-}" = --raw ]; then') + 1
    steps = []
    for line in lines[start:]:
        if line.strip() in ("exit", "fi"):
            break
        argv = shlex.split(line)
        if argv[:1] != ["trap"]:
            steps.append(argv)
    return steps


def floor_steps(reproduce: Path) -> list[list[str]]:
    """The raw steps with the guest command replaced by `true`: boot and power-off, nothing else."""
    steps = raw_steps(reproduce)
    vng = list(steps[-1])
    vng[vng.index("--exec") + 1] = "true"
    return [*steps[:-1], vng]


def run_steps(steps: list[list[str]], env: dict[str, str], log: Path) -> tuple[float, int]:
    t0 = time.monotonic()
    rc = 0
    with log.open("w") as out:
        for argv in steps:
            rc = subprocess.run(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
            ).returncode
    return time.monotonic() - t0, rc


def scratch_of(reproduce: Path) -> str | None:
    return next((argv[-1] for argv in raw_steps(reproduce) if argv[:2] == ["mkdir", "-p"]), None)


def timeline(console: Path) -> dict[str, float]:
    """Guest uptimes of the cell's milestones, from the console (kernel timestamps and frames)."""
    marks: dict[str, float] = {}
    last = 0.0
    for line in console.read_text(errors="replace").splitlines():
        m = KERNEL_TS.match(line)
        if m:
            last = float(m.group(1))
            if "starting script" in line or "virtme-init: starting" in line:
                marks.setdefault("guest command", last)
            if "script exited" in line:
                marks["command exit"] = last
            if "reboot: Power down" in line:
                marks["power-off"] = last
        for f in FRAME.finditer(line):
            payload = json.loads(f.group(2))
            up = payload.get("uptime")
            if f.group(1) == "start" and isinstance(up, (int, float)):
                marks["python up"] = float(up)
                if isinstance(payload.get("t"), (int, float)):
                    marks["entry exec"] = float(up) - float(payload["t"])
            elif f.group(1) == "collected" and isinstance(up, (int, float)):
                marks["collected"] = float(up)
                if "entry exec" not in marks and isinstance(payload.get("t"), (int, float)):
                    marks["entry exec"] = float(up) - float(payload["t"])
            elif f.group(1) == "done":
                # Without its own uptime the frame is placed at the last kernel message before it.
                marks["done"] = float(up) if isinstance(up, (int, float)) else last
    return marks


def outcomes(records: list[dict[str, object]]) -> dict[str, str]:
    return {str(r.get("name")): str(r.get("outcome")) for r in records}


def edu_wait_s(records: list[dict[str, object]]) -> tuple[int, float]:
    """(transfers, seconds) of edu DMA found in the records' details."""
    count, total = 0, 0.0

    def walk(value: object) -> None:
        nonlocal count, total
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and (m := TRANSFER.search(value)):
            count += 1
            total += float(m.group(1)) / (1000 if m.group(2) == "ms" else 1_000_000)

    for record in records:
        walk(record.get("details"))
    return count, total


@dataclass(frozen=True)
class Run:
    """One interleaved round: the three wall times and what the two sides' guests did."""

    floor_s: float
    raw_s: float
    raw_rc: int
    raw_records: list[dict[str, object]]
    hil_s: float
    hil_rc: int
    hil_records: list[dict[str, object]]
    timelines: tuple[dict[str, float], dict[str, float]]  # hil, raw

    def differences(self) -> list[str]:
        """Tests the two sides ended differently: then they did not do the same work."""
        hil, raw = outcomes(self.hil_records), outcomes(self.raw_records)
        return [f"{n}: hil {hil.get(n)}, raw {raw.get(n)}" for n in sorted(hil.keys() | raw.keys())
                if hil.get(n) != raw.get(n)]  # fmt: skip

    def tests_s(self) -> float:
        return sum(float(str(r.get("duration") or 0)) for r in self.hil_records)


def measure(base: list[str], work: Path, index: int, env: dict[str, str]) -> Run:
    out = work / f"run{index}"
    hil_s, hil_rc = timed([*base, "--out", str(out)], env)
    reproduce = out / "reproduce.sh"
    # The raw half replays the same plan into the same run directory: same guest work.
    (out / "guest-results.jsonl").unlink(missing_ok=True)
    raw_log = work / f"raw{index}.log"
    raw_s, raw_rc = run_steps(raw_steps(reproduce), env, raw_log)
    raw_lines = (out / "guest-results.jsonl").read_text().splitlines()
    floor_s, _floor_rc = run_steps(floor_steps(reproduce), env, work / f"floor{index}.log")
    scratch = scratch_of(reproduce)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return Run(
        floor_s=floor_s,
        raw_s=raw_s,
        raw_rc=raw_rc,
        raw_records=[json.loads(line) for line in raw_lines],
        hil_s=hil_s,
        hil_rc=hil_rc,
        hil_records=json.loads((out / "results.json").read_text()).get("records", []),
        timelines=(timeline(out / "console.log"), timeline(raw_log)),
    )


def report(runs: list[Run]) -> None:
    header = (
        f"{'run':>4}  {'floor (s)':>9}  {'raw (s)':>8}  {'rc':>3}  {'tests':>5}  {'hil (s)':>8}  {'rc':>3}"
        f"  {'tests':>5}  {'raw/floor':>9}  {'hil/floor':>9}  {'hil/raw':>7}"
    )
    print(header)
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>4}  {r.floor_s:>9.2f}  {r.raw_s:>8.2f}  {r.raw_rc:>3}  {len(r.raw_records):>5}"
            f"  {r.hil_s:>8.2f}  {r.hil_rc:>3}  {len(r.hil_records):>5}  {r.raw_s / r.floor_s:>9.2f}"
            f"  {r.hil_s / r.floor_s:>9.2f}  {r.hil_s / r.raw_s:>7.3f}"
        )
    floor, raw, hil = (statistics.median(getattr(r, k) for r in runs) for k in ("floor_s", "raw_s", "hil_s"))
    print(
        f"{'med':>4}  {floor:>9.2f}  {raw:>8.2f}  {'':>3}  {'':>5}  {hil:>8.2f}  {'':>3}"
        f"  {'':>5}  {raw / floor:>9.2f}  {hil / floor:>9.2f}  {hil / raw:>7.3f}"
    )
    print(
        f"cell / floor {hil / floor:.2f}x (target <= 2.5x for a built kernel);"
        f" harness over raw {(hil / raw - 1) * 100:+.1f}% (target <= +10%)"
    )
    transfers = edu_wait_s(runs[0].hil_records)[0]
    edu_s = statistics.median(edu_wait_s(r.hil_records)[1] for r in runs)
    tests_s = statistics.median(r.tests_s() for r in runs)
    print(
        f"inside the hil cell: the tests' own time (pytest) median {tests_s:.2f} s, of which waiting for"
        f" edu's DMA {edu_s:.2f} s ({transfers} transfers at its fixed 100 ms);"
        f" floor + edu wait alone = {(floor + edu_s) / floor:.2f}x the floor"
    )
    for i, r in enumerate(runs, 1):
        if differences := r.differences():
            print(f"run {i}: THE TWO SIDES ENDED TESTS DIFFERENTLY, the comparison is unfair:")
            for line in differences:
                print(f"  {line}")
    print("guest timeline (seconds since the guest booted):")
    for r in runs:
        for side, marks in zip(("hil", "raw"), r.timelines, strict=True):
            cells = "  ".join(
                f"{name} {marks[name]:6.2f}" if name in marks else f"{name} {'-':>6}"
                for name in ("guest command", "entry exec", "collected", "done", "command exit", "power-off")
            )
            print(f"  {side:4} {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--topology", default="switch-p2p")
    parser.add_argument("--kernel", default="src:debian-7.2")
    parser.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    work = Path(tempfile.mkdtemp(prefix="p2p-hil-bench-"))
    select = " and ".join(f"not {name}" for name in DESELECTED)
    base = ["./hil", "run", "--topology", args.topology, "--kernel", args.kernel, "-k", select]
    warm_s, warm_rc = timed([*base, "--out", str(work / "warmup")], env)
    try:
        runs = [measure(base, work, i, env) for i in range(args.runs)]
    finally:
        if args.keep:
            print(f"run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(
        f"p2p-hil run overhead: topology {args.topology}, kernel {args.kernel}, {os.cpu_count()} cores,"
        f" load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, warm-up cell {warm_s:.1f} s (rc {warm_rc})"
    )
    print(f"selection on both sides: -k {select!r} (needs the host agent, which a raw reproduction lacks)")
    print(
        "floor: vng --exec true, same kernel and QEMU arguments; raw: sh reproduce.sh --raw; hil: ./hil run"
    )
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
