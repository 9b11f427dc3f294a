"""The guest plan: what the host tells the guest to do, as a JSON file in the shared run directory.

Pure and stdlib-only (the guest imports it from the read-only host tree). `dump_plan`/`plan_to_json` on
the host, `load_plan` in the guest; `plan_from_dict` validates every field and names the bad one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import InfraError

PLAN_ENV = "HIL_PLAN"
"""Environment variable through which the in-guest pytest finds the plan."""

_TOKEN = re.compile(r"^[0-9A-Za-z]+$")
# A test still running after half of the guest's whole budget is presumed hung: no test of the suite
# comes near that, and the other half leaves time to get the evidence out before the overall deadline.
TEST_SHARE_OF_DEADLINE = 0.5


class PlanError(InfraError):
    """The plan file is unreadable or malformed: a harness bug, not a user error."""


class MissingExpectationError(LookupError):
    """The plan carries no oracle prediction for a pair of the topology: the pair cannot be checked."""


# harness.topology.oracle's Route and QemuDma, restated here because the guest cannot import the
# topology layer (pydantic); tests/test_guest_plan.py keeps the two in step.
Route = Literal["bus_addr", "host_bridge_iova", "host_bridge_direct", "refused"]
ROUTES: tuple[Route, ...] = ("bus_addr", "host_bridge_iova", "host_bridge_direct", "refused")
QEMU_DMA = ("reaches_bar", "iommu_fault", "none")
IOMMUFD_DMA = ("reaches_bar", "no_cdev", "noiommu_cdev")  # oracle.IommufdDma


@dataclass(frozen=True, slots=True)
class PairExpectation:
    """The routing oracle's prediction for mapping `exporter`'s BAR for `importer` (topology/oracle.py)."""

    exporter: str
    importer: str
    route: Route
    why: str  # the oracle's reasoning, for messages
    qemu_dma: str | None = None  # what a real DMA by the importer does in QEMU: one of QEMU_DMA
    # Export shape name (harness.guest.shapes) -> sg entries the mapping must give; None: no list (refused).
    sg_entries_for: Mapping[str, int | None] = field(default_factory=dict)
    # The importer DMAing through an iommufd IOAS mapping of the dma-buf instead: one of IOMMUFD_DMA
    # (oracle.predict_iommufd), with the oracle's reasoning; None: not predicted.
    iommufd_dma: str | None = None
    iommufd_why: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    id: str
    kind: str  # ivshmem | edu | ...
    role: str | None  # exporter | importer | dma | None
    sysfs_glob: str  # matches exactly this device's sysfs directory, whatever the bus numbers
    bars: Mapping[int, int] = field(default_factory=dict)  # BAR index -> size in bytes
    backing: Path | None = None  # host file behind an ivshmem BAR (visible in the guest too)


@dataclass(frozen=True, slots=True)
class GuestPlan:
    token: str  # alphanumeric; frames console lines of this run
    run_dir: Path
    results_path: Path  # JSONL, one record per test, appended by the guest plugin
    topology: str
    kernel: str
    devices: tuple[DeviceSpec, ...]
    tests_dir: Path
    pytest_args: tuple[str, ...] = ()
    # Node ids (relative to tests_dir) to run instead of the whole directory: a retry of the tests that
    # failed (`hil run --retries`) runs exactly those.
    only: tuple[str, ...] = ()
    modules_dir: Path | None = None
    guest_deadline_s: float | None = None  # the guest powers itself off after this long
    # The routing oracle's prediction per exporter/importer pair (at most one per pair).
    expectations: tuple[PairExpectation, ...] = ()
    # How long one test (setup, call, teardown) may run before the guest watchdog calls it hung; counted
    # from the test's begin, so however slowly Python starts it does not count. A test's
    # @pytest.mark.hil_timeout(seconds) overrides it. None: derived from guest_deadline_s (test_limit_s).
    test_timeout_s: float | None = None
    # False in the plan of a raw reproduction (`sh reproduce.sh --raw`): no host answers the guest's
    # requests (QMP hot-unplug), so the tests that need one skip saying so instead of waiting.
    host_agent: bool = True
    # Where the guest's Python finds byte-code and pytest's assertion rewrites prepared on the host
    # (harness.guest.prepare): the tree is read-only in the guest, so without it they are redone per boot.
    pycache_prefix: Path | None = None
    # The kernel variant's extra config fragments (`--fragment debug`): the guest turns on what the
    # variant offers (kmemleak scans, the fault-injection and race tests in the default selection).
    fragments: tuple[str, ...] = ()
    # How long each bounded race test runs (`--race-seconds`); None: the test's own default.
    race_seconds: float | None = None
    # Upstream selftest directories to run (`--kselftest vfio`), built on the host for this kernel.
    kselftests: tuple[str, ...] = ()

    def test_limit_s(self) -> float | None:
        """The per-test limit for a test without a marker of its own (None: no limit)."""
        if self.test_timeout_s is not None:
            return self.test_timeout_s
        if self.guest_deadline_s is None:
            return None
        return self.guest_deadline_s * TEST_SHARE_OF_DEADLINE

    def device(self, device_id: str) -> DeviceSpec:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(f"plan has no device {device_id!r}")

    def devices_with_role(self, role: str) -> list[DeviceSpec]:
        return [dev for dev in self.devices if dev.role == role]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (exporter, importer) pair of the plan's devices, as the host oracle pairs them (each
        exporter against each device with role importer or dma), then any further pair the expectations
        name.

        From the devices, not from the expectations: a pair the oracle left out must still get its tests,
        which then fail for want of a prediction instead of never being collected.
        """
        exporters = [dev.id for dev in self.devices_with_role("exporter")]
        importers = [dev.id for dev in self.devices if dev.role in ("importer", "dma")]
        pairs = [(e, i) for e in exporters for i in importers if i != e]
        for exp in self.expectations:
            if (exp.exporter, exp.importer) not in pairs:
                pairs.append((exp.exporter, exp.importer))
        return pairs

    def expectation(self, exporter: str, importer: str) -> PairExpectation:
        """The oracle's prediction for the pair; MissingExpectationError, naming the pair and the pairs the
        plan does predict, when it has none (a skip there would let an oracle that predicts nothing turn
        the routing suite green)."""
        for exp in self.expectations:
            if (exp.exporter, exp.importer) == (exporter, importer):
                return exp
        predicted = ", ".join(f"{e.exporter} -> {e.importer}" for e in self.expectations) or "none"
        raise MissingExpectationError(
            f"the plan has no routing expectation for the pair {exporter} -> {importer} "
            f"(the oracle's predictions in the plan: {predicted})"
        )


# --- JSON <-> dataclasses ---------------------------------------------------------------------


def plan_to_dict(plan: GuestPlan) -> dict[str, Any]:
    return {
        "token": plan.token,
        "run_dir": str(plan.run_dir),
        "results_path": str(plan.results_path),
        "topology": plan.topology,
        "kernel": plan.kernel,
        "devices": [_device_to_dict(dev) for dev in plan.devices],
        "tests_dir": str(plan.tests_dir),
        "pytest_args": list(plan.pytest_args),
        "only": list(plan.only),
        "modules_dir": None if plan.modules_dir is None else str(plan.modules_dir),
        "guest_deadline_s": plan.guest_deadline_s,
        "test_timeout_s": plan.test_timeout_s,
        "host_agent": plan.host_agent,
        "pycache_prefix": None if plan.pycache_prefix is None else str(plan.pycache_prefix),
        "fragments": list(plan.fragments),
        "race_seconds": plan.race_seconds,
        "kselftests": list(plan.kselftests),
        "expectations": [_expectation_to_dict(e) for e in plan.expectations],
    }


def _expectation_to_dict(exp: PairExpectation) -> dict[str, Any]:
    return {
        "exporter": exp.exporter,
        "importer": exp.importer,
        "route": exp.route,
        "why": exp.why,
        "qemu_dma": exp.qemu_dma,
        "sg_entries_for": dict(exp.sg_entries_for),
        "iommufd_dma": exp.iommufd_dma,
        "iommufd_why": exp.iommufd_why,
    }


def _device_to_dict(dev: DeviceSpec) -> dict[str, Any]:
    return {
        "id": dev.id,
        "kind": dev.kind,
        "role": dev.role,
        "sysfs_glob": dev.sysfs_glob,
        # JSON object keys are strings.
        "bars": {str(index): size for index, size in sorted(dev.bars.items())},
        "backing": None if dev.backing is None else str(dev.backing),
    }


def plan_to_json(plan: GuestPlan) -> str:
    return json.dumps(plan_to_dict(plan), indent=2) + "\n"


def dump_plan(plan: GuestPlan, path: Path) -> None:
    """Write the plan; written whole then renamed, so the guest never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(plan_to_json(plan), encoding="utf-8")
    tmp.replace(path)


def load_plan(path: Path | str) -> GuestPlan:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}") from exc
    return plan_from_dict(raw, where=str(path))


def plan_from_dict(raw: object, where: str = "plan") -> GuestPlan:
    obj = _Obj(raw, where)
    token = obj.req_str("token")
    if not _TOKEN.match(token):
        raise PlanError(f"{where}: token: must be alphanumeric, got {token!r}")
    deadline = _opt_seconds(obj, "guest_deadline_s", where)
    test_timeout = _opt_seconds(obj, "test_timeout_s", where)
    devices_raw = obj.get("devices", [])
    if not isinstance(devices_raw, list):
        raise PlanError(f"{where}: devices: expected a list")
    return GuestPlan(
        token=token,
        run_dir=Path(obj.req_str("run_dir")),
        results_path=Path(obj.req_str("results_path")),
        topology=obj.req_str("topology"),
        kernel=obj.req_str("kernel"),
        devices=tuple(_device_from_dict(d, f"{where}: devices[{i}]") for i, d in enumerate(devices_raw)),
        tests_dir=Path(obj.req_str("tests_dir")),
        pytest_args=tuple(obj.str_list("pytest_args")),
        only=tuple(obj.str_list("only")),
        modules_dir=_opt_path(obj.opt_str("modules_dir")),
        guest_deadline_s=deadline,
        expectations=_expectations(obj.get("expectations", []), where),
        test_timeout_s=test_timeout,
        host_agent=_opt_bool(obj, "host_agent", True, where),
        pycache_prefix=_opt_path(obj.opt_str("pycache_prefix")),
        fragments=tuple(obj.str_list("fragments")),
        race_seconds=_opt_seconds(obj, "race_seconds", where),
        kselftests=tuple(obj.str_list("kselftests")),
    )


def _opt_bool(obj: _Obj, key: str, default: bool, where: str) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise PlanError(f"{where}: {key}: expected true or false, got {value!r}")
    return value


def _opt_seconds(obj: _Obj, key: str, where: str) -> float | None:
    value = obj.get(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PlanError(f"{where}: {key}: expected a positive number of seconds or null, got {value!r}")
    return float(value)


def _expectations(raw: object, where: str) -> tuple[PairExpectation, ...]:
    if not isinstance(raw, list):
        raise PlanError(f"{where}: expectations: expected a list of objects, got {type(raw).__name__}")
    out: list[PairExpectation] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(raw):
        exp = _expectation_from_dict(item, f"{where}: expectations[{i}]")
        pair = (exp.exporter, exp.importer)
        if pair in seen:
            # Two predictions for one pair: which one the tests would check is an accident of order.
            raise PlanError(
                f"{where}: expectations[{i}]: a second prediction for {pair[0]} -> {pair[1]} "
                f"(first: expectations[{seen[pair]}])"
            )
        seen[pair] = i
        out.append(exp)
    return tuple(out)


def _expectation_from_dict(raw: object, where: str) -> PairExpectation:
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: expected an object, got {type(raw).__name__}")

    def string(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise PlanError(f"{where}.{key}: expected a non-empty string, got {value!r}")
        return value

    route_raw = raw.get("route")
    route = next((r for r in ROUTES if r == route_raw), None)
    if route is None:
        raise PlanError(f"{where}.route: expected one of {', '.join(ROUTES)}, got {route_raw!r}")
    qemu_dma = raw.get("qemu_dma")
    if qemu_dma is not None and qemu_dma not in QEMU_DMA:
        raise PlanError(f"{where}.qemu_dma: expected one of {', '.join(QEMU_DMA)} or null, got {qemu_dma!r}")
    iommufd_dma = raw.get("iommufd_dma")
    if iommufd_dma is not None and iommufd_dma not in IOMMUFD_DMA:
        raise PlanError(
            f"{where}.iommufd_dma: expected one of {', '.join(IOMMUFD_DMA)} or null, got {iommufd_dma!r}"
        )
    iommufd_why = raw.get("iommufd_why")
    if iommufd_why is not None and not isinstance(iommufd_why, str):
        raise PlanError(f"{where}.iommufd_why: expected a string or null, got {iommufd_why!r}")
    counts_raw = raw.get("sg_entries_for", {})
    if not isinstance(counts_raw, dict):
        raise PlanError(f"{where}.sg_entries_for: expected an object, got {counts_raw!r}")
    counts: dict[str, int | None] = {}
    for shape, count in counts_raw.items():
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count <= 0):
            raise PlanError(f"{where}.sg_entries_for.{shape}: expected a count > 0 or null, got {count!r}")
        counts[shape] = count
    return PairExpectation(
        exporter=string("exporter"),
        importer=string("importer"),
        route=route,
        why=string("why"),
        qemu_dma=None if qemu_dma is None else str(qemu_dma),
        sg_entries_for=counts,
        iommufd_dma=None if iommufd_dma is None else str(iommufd_dma),
        iommufd_why=iommufd_why,
    )


def _device_from_dict(raw: object, where: str) -> DeviceSpec:
    obj = _Obj(raw, where)
    bars_raw = obj.get("bars", {})
    if not isinstance(bars_raw, dict):
        raise PlanError(f"{where}.bars: expected an object")
    bars: dict[int, int] = {}
    for key, size in bars_raw.items():
        if not (isinstance(key, str) and key.isdigit() and 0 <= int(key) <= 5):
            raise PlanError(f"{where}.bars: key {key!r} is not a BAR index 0..5")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise PlanError(f"{where}.bars.{key}: expected a positive size in bytes, got {size!r}")
        bars[int(key)] = size
    return DeviceSpec(
        id=obj.req_str("id"),
        kind=obj.req_str("kind"),
        role=obj.opt_str("role"),
        sysfs_glob=obj.req_str("sysfs_glob"),
        bars=bars,
        backing=_opt_path(obj.opt_str("backing")),
    )


def _opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


class _Obj:
    """A JSON object being validated; every error names `where` and the field."""

    _MISSING = object()

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise PlanError(f"{where}: expected an object, got {type(raw).__name__}")
        self._raw: dict[str, object] = raw
        self._where = where

    def get(self, key: str, default: object = _MISSING) -> object:
        if key in self._raw:
            return self._raw[key]
        if default is self._MISSING:
            raise PlanError(f"{self._where}: {key}: missing")
        return default

    def req_str(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            raise PlanError(f"{self._where}: {key}: expected a non-empty string, got {value!r}")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.get(key, None)
        if value is None:
            return None
        if not isinstance(value, str):
            raise PlanError(f"{self._where}: {key}: expected a string or null, got {value!r}")
        return value

    def str_list(self, key: str) -> list[str]:
        value = self.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PlanError(f"{self._where}: {key}: expected a list of strings, got {value!r}")
        return list(value)
