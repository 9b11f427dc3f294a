"""KTAP v1 and the kselftest harness's TAP 13 output -> results: pure.

What is parsed (Documentation/dev-tools/ktap.rst; tools/testing/selftests/kselftest.h and
kselftest_harness.h for what the selftests print):
- version lines `KTAP version 1` / `TAP version 13`, plans `1..N` (and `1..0 # SKIP reason`, which
  ksft_exit_skip() prints when a whole binary skips, kselftest.h:455);
- results `ok N name`, `not ok N name`, with a directive after ` # `: SKIP, XFAIL, XPASS, TODO, error
  (kselftest.h:253-296 print `ok N # XFAIL msg` with the message where the name would be);
- nested subtests (KTAP v1: indented by 4 spaces or more, `# Subtest: name` before them; the parent's
  own result line follows at the outer indentation);
- `Bail out! reason`;
- everything else (`# ...` diagnostics, stderr lines of a binary run with 2>&1) is kept as the
  diagnostics of the next result at that level: a failing kselftest_harness test prints its
  `file.c:line:test:Expected ...` lines before its `not ok` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

_VERSION = re.compile(r"^(?:K?TAP) version (\d+)\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#\s*(.*))?$")
_RESULT = re.compile(r"^(not ok|ok)\s+(\d+)(?:\s+-)?(?:\s+(.*?))?\s*$")
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(.*)$")
_BAIL = re.compile(r"^Bail out!\s*(.*)$")
# kselftest_harness's progress lines (kselftest_harness.h): not worth repeating in a failure message.
_HARNESS_NOISE = re.compile(
    r"^#\s*(?:RUN|OK|FAIL|SKIP|XFAIL|XPASS)\s{2,}|^#\s+(?:Starting|PASSED|FAILED|Totals)\b"
)
DIRECTIVES = ("SKIP", "XFAIL", "XPASS", "TODO", "ERROR", "TIMEOUT")


@dataclass(frozen=True)
class KtapResult:
    """One result line. `path` names it from the outermost subtest down; `children` counts the results
    of its nested subtests (a parent result); `diagnostics` are the lines that came before it at its level
    since the previous result."""

    path: tuple[str, ...]
    number: int
    ok: bool
    directive: str | None  # upper-case: SKIP, XFAIL, XPASS, TODO, ERROR, TIMEOUT, or another word
    reason: str
    diagnostics: tuple[str, ...] = ()
    children: int = 0

    @property
    def name(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True)
class KtapDocument:
    results: tuple[KtapResult, ...]
    version: str | None  # "KTAP 1", "TAP 13" (None: no version line: not KTAP at all, or truncated)
    plan: int | None  # the top level's 1..N
    skip_all: str | None  # `1..0 # SKIP reason`
    bail_out: str | None
    # Plans a level did not fulfil: "vfio_dma_mapping_test: planned 61, got 12" (a crash, a timeout).
    unfinished: tuple[str, ...] = ()
    # Lines after the last result at the top level (a binary's last words before it died).
    trailing: tuple[str, ...] = ()


@dataclass
class _Level:
    indent: int
    name: str | None = None
    plan: int | None = None
    skip_all: str | None = None
    results: list[KtapResult] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # diagnostics waiting for the next result
    direct: int = 0  # results at this level itself (not nested)


def _split_directive(text: str) -> tuple[str, str | None, str]:
    """'name # SKIP why' -> ('name', 'SKIP', 'why'); 'name # a comment' -> ('name', None, 'a comment');
    `ok 3 # SKIP why` (kselftest.h's unnamed form) -> ('', 'SKIP', 'why')."""
    if text.startswith("# "):
        name, rest = "", text[2:]
    else:
        name, hash_, rest = text.partition(" # ")
        if not hash_:
            return text.strip(), None, ""
    word, _, reason = rest.strip().partition(" ")
    if word.upper() in DIRECTIVES:
        return name.strip(), word.upper(), reason.strip()
    return name.strip(), None, rest.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


class _Parser:
    """The state of one pass over the lines: a stack of levels, the innermost last."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.bail: str | None = None
        self.unfinished: list[str] = []
        self.stack: list[_Level] = [_Level(indent=0)]
        self.subtest_name: str | None = None  # `# Subtest:` names the next deeper level

    def close_to(self, indent: int) -> list[KtapResult]:
        """Pop the levels deeper than `indent`; their results, named below their level, for the parent
        result that follows (a level closed without one keeps its `# Subtest:` name as the prefix)."""
        stack = self.stack
        carried: list[KtapResult] = []
        while len(stack) > 1 and stack[-1].indent > indent:
            level = stack.pop()
            if level.plan is not None and level.direct < level.plan:
                self.unfinished.append(f"{level.name or 'subtest'}: planned {level.plan}, got {level.direct}")
            carried = level.results + carried
            if len(stack) > 1 and stack[-1].indent > indent:  # an intermediate level never got its result
                carried = [_under(level.name or "subtest", r) for r in carried]
        return carried

    def feed(self, indent: int, body: str) -> None:
        stack = self.stack
        structural = bool(_VERSION.match(body) or _PLAN.match(body) or _RESULT.match(body))
        if structural and indent > stack[-1].indent:
            stack.append(_Level(indent=indent, name=self.subtest_name))
            self.subtest_name = None
        if m := _VERSION.match(body):
            if len(stack) == 1:
                self.version = f"{'KTAP' if body.startswith('K') else 'TAP'} {m.group(1)}"
        elif m := _SUBTEST.match(body):
            named = m.group(1).strip()
            inner = stack[-1]
            if len(stack) > 1 and indent == inner.indent and inner.name is None and not inner.results:
                inner.name = named  # KTAP v1: the version line opened the level, this names it
            else:
                self.subtest_name = named  # before its level's first line (older KUnit output)
        elif m := _BAIL.match(body):
            self.bail = m.group(1).strip() or "(no reason given)"
        elif m := _PLAN.match(body):
            level = stack[-1] if indent >= stack[-1].indent else stack[0]
            level.plan = int(m.group(1))
            comment = (m.group(2) or "").strip()
            if level.plan == 0 and comment.upper().startswith("SKIP"):
                level.skip_all = comment[4:].strip() or "skipped"
        elif m := _RESULT.match(body):
            self.result(indent, m)
        else:
            # A diagnostic: it belongs to the innermost level it is not less indented than.
            target = next((lv for lv in reversed(stack) if indent >= lv.indent), stack[0])
            target.pending.append(body)

    def result(self, indent: int, m: re.Match[str]) -> None:
        children = self.close_to(indent)
        level = self.stack[-1]
        name, directive, reason = _split_directive(m.group(3) or "")
        number = int(m.group(2))
        # kselftest.h's `ok N # XFAIL msg` has no name: the message is what tells the results apart.
        unnamed = reason if directive in ("XFAIL", "XPASS", "SKIP") and reason else ""
        label = name or unnamed or str(number)
        ok = m.group(1) == "ok"
        level.results.extend(_under(label, child) for child in children)
        level.results.append(
            KtapResult((label,), number, ok, directive, reason, tuple(level.pending), len(children))
        )
        level.pending = []
        level.direct += 1

    def finish(self) -> KtapDocument:
        # A level still open at the end never printed its parent's result: the binary stopped inside it.
        name = self.stack[1].name if len(self.stack) > 1 else None
        leftover = [_under(name or "subtest", r) for r in self.close_to(-1)]
        top = self.stack[0]
        if top.plan is not None and top.direct < top.plan:
            self.unfinished.append(f"planned {top.plan}, got {top.direct}")
        results = tuple(top.results) + tuple(leftover)
        return KtapDocument(
            results,
            self.version,
            top.plan,
            top.skip_all,
            self.bail,
            tuple(self.unfinished),
            tuple(top.pending),
        )


def parse_ktap(text: str) -> KtapDocument:
    """Every result in `text`, nested subtests flattened to paths; never raises."""
    parser = _Parser()
    for raw in text.replace("\r", "").split("\n"):
        line = raw.rstrip()
        if line.strip():
            parser.feed(_indent(line), line.strip())
    return parser.finish()


def _under(parent: str, result: KtapResult) -> KtapResult:
    return replace(result, path=(parent, *result.path))


def failure_lines(diagnostics: tuple[str, ...]) -> list[str]:
    """The diagnostics worth a failure message: the harness's RUN/OK banners left out."""
    return [d for d in diagnostics if not _HARNESS_NOISE.match(d)]
