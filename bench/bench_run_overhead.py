"""What the harness costs on top of the raw tool: one `./hil run` cell against the raw `vng` run of the
same kernel, QEMU arguments and guest work (the `--raw` half of the cell's own reproduce.sh).

Runs are interleaved (hil, raw, hil, raw, ...) so that load from other work hits both sides alike.
Prints a table of measured wall times and the ratio of medians. Not a test: nothing here asserts.

    .venv/bin/python bench/bench_run_overhead.py [--runs 5] [--topology switch-p2p] [--kernel debian:7.2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.monotonic() - t0, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--topology", default="switch-p2p")
    parser.add_argument("--kernel", default="debian:7.2")
    parser.add_argument("-k", dest="select", default=None)
    args = parser.parse_args()
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    work = Path(tempfile.mkdtemp(prefix="p2p-hil-bench-"))
    select = ["-k", args.select] if args.select else []
    base = ["./hil", "run", "--topology", args.topology, "--kernel", args.kernel, *select]
    # Warm-up: fetch the kernel and remember the accelerator probe, as any second run would.
    subprocess.run(
        [*base, "--out", str(work / "warmup")], cwd=REPO, env=env, capture_output=True, check=False
    )
    hil_times: list[float] = []
    raw_times: list[float] = []
    rows = []
    try:
        for i in range(args.runs):
            out = work / f"run{i}"
            hil_s, hil_rc = timed([*base, "--out", str(out)], env)
            # The raw half replays the same plan into the same run directory: same guest work.
            (out / "guest-results.jsonl").unlink(missing_ok=True)
            raw_s, raw_rc = timed(["sh", str(out / "reproduce.sh"), "--raw"], env)
            scratch = next((line.split()[-1] for line in (out / "reproduce.sh").read_text().splitlines()
                            if line.strip().startswith("mkdir -p")), None)  # fmt: skip
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            hil_times.append(hil_s)
            raw_times.append(raw_s)
            rows.append((i + 1, hil_s, hil_rc, raw_s, raw_rc))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()
    print(f"p2p-hil run overhead: topology {args.topology}, kernel {args.kernel}, {os.cpu_count()} cores,"
          f" load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")  # fmt: skip
    print(f"{'run':>4}  {'./hil run (s)':>14}  {'rc':>3}  {'raw vng (s)':>12}  {'rc':>3}  {'ratio':>6}")
    for i, hil_s, hil_rc, raw_s, raw_rc in rows:
        print(f"{i:>4}  {hil_s:>14.2f}  {hil_rc:>3}  {raw_s:>12.2f}  {raw_rc:>3}  {hil_s / raw_s:>6.3f}")
    hil_med, raw_med = statistics.median(hil_times), statistics.median(raw_times)
    print(f"{'med':>4}  {hil_med:>14.2f}  {'':>3}  {raw_med:>12.2f}  {'':>3}  {hil_med / raw_med:>6.3f}")
    print(
        f"harness overhead: {hil_med - raw_med:+.2f} s"
        f" ({(hil_med / raw_med - 1) * 100:+.1f}%), target <= +10%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
