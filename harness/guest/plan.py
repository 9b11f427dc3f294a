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
from typing import Any

from harness.errors import InfraError

PLAN_ENV = "HIL_PLAN"
"""Environment variable through which the in-guest pytest finds the plan."""

_TOKEN = re.compile(r"^[0-9A-Za-z]+$")


class PlanError(InfraError):
    """The plan file is unreadable or malformed: a harness bug, not a user error."""


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
    modules_dir: Path | None = None
    guest_deadline_s: float | None = None  # the guest powers itself off after this long
    # The routing oracle's prediction per exporter/importer pair: {exporter, importer, route, why,
    # qemu_dma, sg_entries_for: {shape name: entries or None}} (harness.topology.oracle).
    expectations: tuple[Mapping[str, Any], ...] = ()

    def device(self, device_id: str) -> DeviceSpec:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(f"plan has no device {device_id!r}")

    def devices_with_role(self, role: str) -> list[DeviceSpec]:
        return [dev for dev in self.devices if dev.role == role]


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
        "modules_dir": None if plan.modules_dir is None else str(plan.modules_dir),
        "guest_deadline_s": plan.guest_deadline_s,
        "expectations": [dict(e) for e in plan.expectations],
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
    deadline = obj.get("guest_deadline_s", None)
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int | float)):
        raise PlanError(f"{where}: guest_deadline_s: expected a number or null, got {deadline!r}")
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
        modules_dir=_opt_path(obj.opt_str("modules_dir")),
        guest_deadline_s=None if deadline is None else float(deadline),
        expectations=_expectations(obj.get("expectations", []), where),
    )


def _expectations(raw: object, where: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise PlanError(f"{where}: expectations: expected a list of objects")
    for i, e in enumerate(raw):
        for key in ("exporter", "importer", "route"):
            if not isinstance(e.get(key), str):
                raise PlanError(f"{where}: expectations[{i}].{key}: expected a string")
    return tuple(raw)


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
