"""The whole matrix three ways, side by side: one cell at a time (`-j 1`), two at a time (`-j 2`), and two
shard processes started together then merged (`--shard 1/2`, `--shard 2/2`, `hil merge`: what two CI
machines do, here sharing this machine's cores). Wall time of the commands, medians over repeated runs,
ratios to the serial run; the raw tool underneath is the same vng for all three (bench_run_overhead.py
compares a cell with raw vng).

Runs are interleaved (serial, -j 2, shards, serial, ...) so other load on a shared machine hits all
alike. A warm-up matrix first builds or fetches the kernel, the test modules and the guest byte-code.
Every matrix must pass (a failed run is reported, not timed). Not a test: nothing here asserts.

    .venv/bin/python bench/bench_matrix.py [--runs 3] [--kernel src:debian-7.2] [--topology all]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HIL = str(REPO / "hil")


def run(argv: list[str]) -> int:
    return subprocess.run(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    ).returncode


def serial(base: list[str], out: Path) -> list[int]:
    return [run([*base, "-j", "1", "--out", str(out)])]


def parallel(base: list[str], out: Path) -> list[int]:
    return [run([*base, "-j", "2", "--out", str(out)])]


def shards(base: list[str], out: Path) -> list[int]:
    parts = [out.with_name(f"{out.name}-s{k}") for k in (1, 2)]
    procs = [
        subprocess.Popen(
            [*base, "-j", "1", "--shard", f"{k}/2", "--out", str(part)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k, part in zip((1, 2), parts, strict=True)
    ]
    codes = [p.wait() for p in procs]
    return [*codes, run([HIL, "merge", *map(str, parts), "--out", str(out)])]


MODES = {"serial (-j 1)": serial, "-j 2": parallel, "2 shards + merge": shards}


def cells_time(out: Path) -> float:
    """The cells' own total time, summed: the work done, whatever ran side by side."""
    matrix = json.loads((out / "matrix.json").read_text())
    return float(sum(c["durations"].get("total", 0.0) for c in matrix["cells"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel", default="src:debian-7.2")
    parser.add_argument("--topology", default="all")
    args = parser.parse_args()
    base = [HIL, "run", "--topology", args.topology, "--kernel", args.kernel]
    work = Path(tempfile.mkdtemp(prefix="p2p-hil-bench-matrix-"))
    print(f"warm-up: {' '.join(base)}", flush=True)
    run([*base, "-j", "1", "--out", str(work / "warm-up")])
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    work_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    for n in range(args.runs):
        for mode, how in MODES.items():
            out = work / f"{n}-{mode.split()[0].strip('-')}"
            t0 = time.monotonic()
            codes = how(base, out)
            wall = time.monotonic() - t0
            if any(codes):
                print(f"run {n + 1} {mode}: exit {codes}, not timed (see {out})", flush=True)
                continue
            walls[mode].append(wall)
            work_s[mode].append(cells_time(out))
            print(f"run {n + 1} {mode}: {wall:.1f} s wall, cells {work_s[mode][-1]:.1f} s", flush=True)
    ref = statistics.median(walls["serial (-j 1)"]) if walls["serial (-j 1)"] else float("nan")
    print(f"\n{args.topology} topologies x {args.kernel}, medians of {args.runs} interleaved runs")
    print(f"{'mode':<18} {'wall (s)':>9} {'cells summed (s)':>17} {'speed-up vs serial':>19}  runs (wall s)")
    for mode in MODES:
        if not walls[mode]:
            print(f"{mode:<18} {'-':>9}")
            continue
        wall = statistics.median(walls[mode])
        cells = statistics.median(work_s[mode])
        each = ", ".join(f"{w:.1f}" for w in walls[mode])
        print(f"{mode:<18} {wall:>9.1f} {cells:>17.1f} {ref / wall:>18.2f}x  {each}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
