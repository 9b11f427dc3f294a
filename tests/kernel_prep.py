"""Kernels the selected tests boot, fetched or built before the first test runs, with progress.

A test says which kernel it boots with `@pytest.mark.kernel(spec, series=None, fragments=())`
(fragments: the kernel variant, as `--fragment`). After collection,
when -m, -k, --fast and the paths given have already chosen the tests, every kernel a chosen test
names is resolved once, with the harness's own progress lines (a first build of src:debian-7.2
shows objects compiled of the total and the time left). Before this, that build (6-18 minutes)
ran silently inside whichever test first called `hil run`. The tests' own runs then hit the cache.

A kernel that cannot be prepared fails the tests that boot it, with the reason, at their setup;
the other tests still run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hil_live import bind, show

from harness.errors import HilError

KERNEL_MARK = "kernel"


@dataclass(frozen=True)
class KernelNeed:
    spec: str
    series: Path | None = None
    fragments: tuple[str, ...] = ()  # the kernel variant (`--fragment debug`)

    def __str__(self) -> str:
        label = "+".join((self.spec, *self.fragments))
        return label if self.series is None else f"{label} + {self.series.name}"


_FAILED = pytest.StashKey[dict[KernelNeed, str]]()


def _need(mark: pytest.Mark) -> KernelNeed:
    if len(mark.args) != 1 or not isinstance(mark.args[0], str):
        raise pytest.UsageError(f"@pytest.mark.kernel takes one spec string, got {mark.args!r}")
    series = mark.kwargs.get("series")
    fragments = tuple(mark.kwargs.get("fragments", ()))
    return KernelNeed(mark.args[0], Path(series) if series is not None else None, fragments)


def kernels_needed(items: Iterable[pytest.Item]) -> list[KernelNeed]:
    """Every kernel the given tests boot, once each, in the order the tests run."""
    return list(dict.fromkeys(_need(mark) for item in items for mark in item.iter_markers(KERNEL_MARK)))


def _progress(message: str) -> None:
    show(f"[hil] {message}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel(spec, series=None, fragments=()): the kernel this test boots; fetched or built, "
        "with progress, before the first test runs",
    )
    bind(config)


@pytest.hookimpl(trylast=True)  # after pytest has said how many tests it collected
def pytest_collection_finish(session: pytest.Session) -> None:
    failed: dict[KernelNeed, str] = {}
    session.config.stash[_FAILED] = failed
    if session.config.option.collectonly:
        return
    needs = kernels_needed(session.items)
    if not needs:
        return
    from harness.kernels.image import resolve_kernel

    _progress(f"preparing the kernels the selected tests boot: {', '.join(map(str, needs))}")
    t0 = time.monotonic()
    ready = []
    for need in needs:
        try:
            kimg = resolve_kernel(need.spec, progress=_progress, series=need.series, fragments=need.fragments)
        except HilError as exc:
            failed[need] = str(exc)
            _progress(f"kernel {need} could not be prepared; the tests that boot it will fail: {exc}")
        else:
            ready.append(f"{need} ({kimg.version})")
    if ready:
        _progress(f"kernels ready in {time.monotonic() - t0:.1f} s: {', '.join(ready)}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    failed = item.config.stash.get(_FAILED, {})
    for mark in item.iter_markers(KERNEL_MARK):
        need = _need(mark)
        if need in failed:
            pytest.fail(f"kernel {need} could not be prepared: {failed[need]}", pytrace=False)
