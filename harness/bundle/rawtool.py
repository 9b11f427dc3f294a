"""The raw script's helper, copied into a bundle as raw/rawtool.py: standard library only, so that it
runs with any Python >= 3.11 and no p2p-hil checkout.

    python3 rawtool.py plan TEMPLATE PLAN RAW OUT SCRATCH   the guest plan for this run's directories
    python3 rawtool.py summary RESULTS.jsonl                the guest's records, counted; exit 1 on a failure
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping

RAW, OUT, SCRATCH = "@@RAW@@", "@@OUT@@", "@@SCRATCH@@"
BAD = ("failed", "error", "xpassed")


def fill(value: object, places: Mapping[str, str]) -> object:
    """`value` with every placeholder in every string replaced."""
    if isinstance(value, str):
        for mark, path in places.items():
            value = value.replace(mark, path)
        return value
    if isinstance(value, list):
        return [fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, places) for k, v in value.items()}
    return value


def summary(text: str) -> tuple[str, int]:
    """A line per test that did not pass, the counts, and the status: 1 when one failed, 3 when none ran."""
    counts: Counter[str] = Counter()
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(f"  (cut off: {line[:80]!r})")
            continue
        counts[record.get("outcome", "?")] += 1
        if record.get("outcome") != "passed":
            message = str(record.get("message", "")).splitlines()[:1]
            lines.append(
                f"  {record.get('outcome', '?'):8} {record.get('name', '?')} {''.join(message)[:100]}"
            )
    total = sum(counts.values())
    lines.append(f"{total} tests: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    status = 3 if total == 0 else 1 if any(counts[o] for o in BAD) else 0
    return "\n".join(lines), status


def main(argv: list[str]) -> int:
    if argv[:1] == ["plan"] and len(argv) == 6:
        _, template, plan, raw, out, scratch = argv
        with open(template, encoding="utf-8") as f:
            data = json.load(f)
        with open(plan, "w", encoding="utf-8") as f:
            json.dump(fill(data, {RAW: raw, OUT: out, SCRATCH: scratch}), f, indent=2)
        return 0
    if argv[:1] == ["summary"] and len(argv) == 2:
        try:
            with open(argv[1], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            print(f"no results: {exc}")
            return 3
        report, status = summary(text)
        print(report)
        return status
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
