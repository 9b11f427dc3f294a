"""raw/run.sh of a bundle: the steps the harness ran under a cell (scratch files, seed bytes, vng), with
the machine-specific paths turned into the script's variables (pure).

The guest side comes with the bundle (raw/harness, raw/guest_tests; harness.bundle.guest_sources): vng's
--cwd is the raw directory, so `python -m harness.guest.entry` imports the bundled copy, and the entry
puts its own checkout (the raw directory) on the tests' PYTHONPATH. What the bundle cannot carry, the
script checks first and names: QEMU, virtme-ng, a Python >= 3.11 with the third-party modules the guest
imports, and the kernel image.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from harness.bundle.rawtool import OUT, RAW, SCRATCH
from harness.bundle.script import ReproduceScript, option_value

RAW_DIR = "raw"
PLAN_TEMPLATE = "plan.template.json"
MODULES_DIR = "modules"
# Characters the script accepts in paths that end up inside vng's --exec and --cwd strings.
SAFE_PATH = "A-Za-z0-9_./+=:@-"


def sh_word(arg: str, variables: Mapping[str, str]) -> str:
    """`arg` as one shell word, each occurrence of a mapped path written as "${VAR}" (longest first)."""
    keys = sorted((k for k in variables if k), key=len, reverse=True)
    parts: list[str] = []
    literal = ""
    i = 0
    while i < len(arg):
        key = next((k for k in keys if arg.startswith(k, i)), None)
        if key is None:
            literal += arg[i]
            i += 1
            continue
        if literal:
            parts.append(shlex.quote(literal))
            literal = ""
        parts.append(f'"${{{variables[key]}}}"')
        i += len(key)
    if literal or not parts:
        parts.append(shlex.quote(literal))
    return "".join(parts)


def _line(argv: Sequence[str], variables: Mapping[str, str]) -> str:
    return " ".join(sh_word(a, variables) for a in argv)


def raw_vng(vng: Sequence[str], run_dir: str, scratch: str) -> list[str]:
    """The cell's vng argv with placeholders for what differs per run: vng, kernel, directories, and the
    guest command (the bundled entry, the bundled plan)."""
    out = list(vng)
    out[0] = "@@VNG@@"
    replace = {
        "--run": "@@KERNEL@@",
        "--cwd": RAW,
        "--exec": "@@PYTHON@@ -m harness.guest.entry @@OUT@@/plan.json",
    }
    for i, arg in enumerate(out[:-1]):
        if arg in replace:
            out[i + 1] = replace[arg]
    return [a.replace(run_dir, OUT).replace(scratch, SCRATCH) for a in out]


def plan_template(plan: Mapping[str, Any], run_dir: str, scratch: str, modules: bool) -> dict[str, Any]:
    """plan-raw.json with the run's paths as placeholders (rawtool.py fills them in at run time)."""

    def swap(value: object) -> object:
        if isinstance(value, str):
            return value.replace(run_dir, OUT).replace(scratch, SCRATCH)
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value

    template = {k: swap(v) for k, v in plan.items()}
    template["tests_dir"] = f"{RAW}/guest_tests"
    template["modules_dir"] = f"{RAW}/{MODULES_DIR}" if modules else None
    template["pycache_prefix"] = None  # the host's prepared byte-code is not in the bundle
    template["host_agent"] = False
    return template


_VARS = {
    RAW: "RAW",
    OUT: "OUT",
    SCRATCH: "SCRATCH",
    "@@VNG@@": "VNG",
    "@@KERNEL@@": "KERNEL",
    "@@PYTHON@@": "PYTHON",
}


def raw_script(
    repro: ReproduceScript,
    *,
    run_dir: str,
    kernel_image: str,
    header: Sequence[str],
    third_party: Sequence[str],
    run_name: str,
) -> str:
    """run.sh: checks what the host must provide, then the cell's own steps with this run's paths."""
    scratch = repro.scratch or "/nonexistent-scratch"
    steps: list[str] = []
    for argv in repro.raw[:-1]:
        if argv[:1] in (["mkdir"], ["trap"]):
            continue  # the script makes and removes its own scratch directory
        # the seed bytes travel in the bundle: raw/host-seed-*.bin
        step = [
            f"if={RAW}/{PurePosixPath(a.removeprefix('if=')).name}"
            if argv[0] == "dd" and a.startswith("if=")
            else a
            for a in argv
        ]
        steps.append(_line([a.replace(scratch, SCRATCH) for a in step], _VARS))
    vng = _line(raw_vng(repro.vng_argv, run_dir, scratch), _VARS)
    imports = "; ".join(f"import {m}" for m in third_party)
    checks_python = [
        '  "$PYTHON" -c \'import sys; sys.exit(sys.version_info < (3, 11))\' || missing="$missing',
        '  Python >= 3.11 ($PYTHON is older)"',
    ]
    if third_party:
        checks_python += [
            f'  "$PYTHON" -c {shlex.quote(imports)} 2>/dev/null || missing="$missing',
            f"  {', '.join(third_party)} for $PYTHON (the guest runs the tests with the host's Python)\"",
        ]
    lines = [
        "#!/bin/sh",
        "# Re-runs one p2p-hil cell without p2p-hil: the exact steps the harness ran underneath.",
        *(f"# {h}" for h in header),
        "# Needs qemu-system-x86_64, virtme-ng (vng), a Python >= 3.11 with "
        + (", ".join(third_party) or "nothing else")
        + " (the guest",
        "# runs the host's Python over 9p) and the kernel image; it checks them first and names what lacks.",
        "# usage: sh raw/run.sh [KERNEL_IMAGE [OUT_DIR]]   (environment: VNG, PYTHON)",
        "# There is no host agent here: tests that need one (QMP hot-unplug) skip and say so.",
        "set -eu",
        'RAW=$(cd "$(dirname "$0")" && pwd)',
        f"KERNEL=${{1:-{shlex.quote(kernel_image)}}}",
        f'OUT=${{2:-"$PWD/{run_name}-$(date +%Y%m%d-%H%M%S)"}}',
        "VNG=${VNG:-vng}",
        "PYTHON=${PYTHON:-python3}",
        "missing=",
        'command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing',
        '  qemu-system-x86_64 (QEMU)"',
        'command -v "$VNG" >/dev/null 2>&1 || missing="$missing',
        '  $VNG (virtme-ng: pip install virtme-ng)"',
        'if command -v "$PYTHON" >/dev/null 2>&1; then',
        '  PYTHON=$(command -v "$PYTHON")',
        *checks_python,
        "else",
        '  missing="$missing',
        '  $PYTHON (a Python >= 3.11)"',
        "fi",
        '[ -f "$KERNEL" ] || missing="$missing',
        '  the kernel image $KERNEL (give its path as the first argument)"',
        'if [ -n "$missing" ]; then',
        '  echo "raw/run.sh: cannot run, missing:$missing" >&2',
        "  exit 3",
        "fi",
        'for path in "$RAW" "$OUT" "$PYTHON"; do',
        f'  case "$path" in *[!{SAFE_PATH}]*)',
        '    echo "raw/run.sh: $path: no spaces or shell characters here (it goes into vng --exec)" >&2',
        "    exit 2",
        "  esac",
        "done",
        'mkdir -p "$OUT"',
        "SCRATCH=$(mktemp -d /tmp/p2p-hil-raw-XXXXXXXX)",
        "trap 'rm -rf \"$SCRATCH\"' EXIT",
        *steps,
        f'"$PYTHON" "$RAW/rawtool.py" plan "$RAW/{PLAN_TEMPLATE}" "$OUT/plan.json" "$RAW" "$OUT" "$SCRATCH"',
        "# vng's own exit status says nothing (255 even when the guest command exits 0): the records do.",
        f'{vng} 2>&1 | tee "$OUT/console.log" || true',
        'echo "console and results: $OUT"',
        "status=0  # not exec: the trap removes the scratch directory on the way out",
        '"$PYTHON" "$RAW/rawtool.py" summary "$OUT/guest-results.jsonl" || status=$?',
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def kernel_of(repro: ReproduceScript) -> str | None:
    return option_value(repro.vng_argv, "--run")
