"""Where a cell's time goes, side by side: the boot floor, the raw vng run of the same guest work, and the
harness cell, with medians over repeated runs and the ratios the issue's targets are stated in.

- floor: `vng ... --exec true` with the cell's own kernel, memory, CPUs and topology QEMU arguments
  (the cell's reproduce.sh --raw command with the guest command replaced by `true`);
- raw: `sh reproduce.sh --raw`, the exact steps the harness ran underneath (scratch files, the vng
  command, the same plan) without the harness;
- hil: `./hil run --topology X --kernel K --out DIR`, wall time of the whole command.

Both sides run the same selection. A raw reproduction has no host agent (nothing answers QMP requests),
so tests that need one cannot run there: they are deselected on both sides (DESELECTED), and the
table says so. Runs are interleaved (hil, raw, floor, hil, ...) so that other load hits all alike; the
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Tests that need the host agent (QMP hot-unplug): a raw reproduction skips them (plan host_agent false).
DESELECTED = ("test_revoke_by_hot_unplug",)
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
    times: dict[str, list[float]] = {"floor": [], "raw": [], "hil": []}
    rows = []
    timelines = []
    try:
        for i in range(args.runs):
            out = work / f"run{i}"
            hil_s, hil_rc = timed([*base, "--out", str(out)], env)
            reproduce = out / "reproduce.sh"
            timelines.append(("hil", timeline(out / "console.log")))
            # The raw half replays the same plan into the same run directory: same guest work.
            (out / "guest-results.jsonl").unlink(missing_ok=True)
            raw_log = work / f"raw{i}.log"
            raw_s, raw_rc = run_steps(raw_steps(reproduce), env, raw_log)
            timelines.append(("raw", timeline(raw_log)))
            raw_records = (out / "guest-results.jsonl").read_text().splitlines()
            floor_s, _floor_rc = run_steps(floor_steps(reproduce), env, work / f"floor{i}.log")
            scratch = scratch_of(reproduce)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            hil_records = json.loads((out / "results.json").read_text()).get("records", [])
            for key, value in (("floor", floor_s), ("raw", raw_s), ("hil", hil_s)):
                times[key].append(value)
            rows.append((i + 1, floor_s, raw_s, raw_rc, len(raw_records), hil_s, hil_rc, len(hil_records)))
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
    header = (
        f"{'run':>4}  {'floor (s)':>9}  {'raw (s)':>8}  {'rc':>3}  {'tests':>5}  {'hil (s)':>8}  {'rc':>3}"
        f"  {'tests':>5}  {'raw/floor':>9}  {'hil/floor':>9}  {'hil/raw':>7}"
    )
    print(header)
    for i, floor_s, raw_s, raw_rc, raw_n, hil_s, hil_rc, hil_n in rows:
        print(
            f"{i:>4}  {floor_s:>9.2f}  {raw_s:>8.2f}  {raw_rc:>3}  {raw_n:>5}  {hil_s:>8.2f}  {hil_rc:>3}"
            f"  {hil_n:>5}  {raw_s / floor_s:>9.2f}  {hil_s / floor_s:>9.2f}  {hil_s / raw_s:>7.3f}"
        )
    med = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"{'med':>4}  {med['floor']:>9.2f}  {med['raw']:>8.2f}  {'':>3}  {'':>5}  {med['hil']:>8.2f}  {'':>3}"
        f"  {'':>5}  {med['raw'] / med['floor']:>9.2f}  {med['hil'] / med['floor']:>9.2f}"
        f"  {med['hil'] / med['raw']:>7.3f}"
    )
    print(
        f"cell / floor {med['hil'] / med['floor']:.2f}x (target <= 2.5x for a built kernel);"
        f" harness over raw {(med['hil'] / med['raw'] - 1) * 100:+.1f}% (target <= +10%)"
    )
    print("guest timeline (seconds since the guest booted):")
    for side, marks in timelines:
        cells = "  ".join(
            f"{name} {marks[name]:6.2f}" if name in marks else f"{name} {'-':>6}"
            for name in ("guest command", "entry exec", "collected", "done", "command exit", "power-off")
        )
        print(f"  {side:4} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
