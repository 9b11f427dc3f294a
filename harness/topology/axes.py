"""`--axis KEY=V1,V2`: one base topology -> validated variants, the cartesian product of the axes (pure).

Values are made canonical when parsed (acs.rp1=true -> on, memory=1024M -> 1G, smp=02 -> 2), so the
same machine always gets the same variant name and, through it, the same cell id on every night.
A variant is named pytest-like, `switch-p2p[cpu=EPYC-Rome,iommu=none]`; that name is outside the
model's [a-z0-9_-] names on purpose (it must say what it is), so it is set after validation and a
variant's dump is read back with `variant_from_json`.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from harness.errors import ConfigError
from harness.sizes import format_size, parse_size
from harness.topology.cpus import CPU_MODELS
from harness.topology.model import CrossFieldError, Loc, Topology, format_loc

WHERE = "--axis"
# Every variant is a VM boot per kernel: a typo such as a 20-value list should not plan a week of VM time.
MAX_VARIANTS = 256
ACS_PREFIX = "acs."

Axis = tuple[str, tuple[str, ...]]
AxisValues = tuple[tuple[str, str], ...]


class Variant(NamedTuple):
    topology: Topology
    axes: AxisValues


_TRUE, _FALSE = ("true", "on"), ("false", "off")
_PORT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def _boolean(on: str, off: str) -> Callable[[str], str]:
    def canonical(value: str) -> str:
        low = value.lower()
        if low in _TRUE:
            return on
        if low in _FALSE:
            return off
        raise ValueError(f"{value!r} is not {on} or {off} (on, off, true and false are accepted)")

    return canonical


def _iommu(value: str) -> str:
    if value not in ("intel", "none"):
        raise ValueError(f"{value!r} is not intel or none")
    return value


def _cpu(value: str) -> str:
    if value not in CPU_MODELS:
        close = difflib.get_close_matches(value, CPU_MODELS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown cpu model {value!r}{hint}; valid: {', '.join(CPU_MODELS)}")
    return value


def _smp(value: str) -> str:
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a number of vCPUs")
    return str(int(value))


def _memory(value: str) -> str:
    return format_size(parse_size(value))


# Key -> canonical spelling of a value (ValueError when it is not one). Range checks (smp 1..64,
# memory >= 128M) stay with the model, which knows them.
_VALUES: dict[str, Callable[[str], str]] = {
    "cpu": _cpu,
    "iommu": _iommu,
    "iommu_passthrough": _boolean("true", "false"),
    "smp": _smp,
    "memory": _memory,
}
_ACS_VALUE = _boolean("on", "off")
KEYS = (*_VALUES, f"{ACS_PREFIX}<root port id>")


def parse_axis(text: str) -> Axis:
    """'KEY=V1,V2' -> (KEY, (V1, V2)) with canonical values; ConfigError(where='--axis') otherwise."""
    key, eq, rest = text.partition("=")
    key = key.strip()
    if not eq:
        raise ConfigError(f"{text!r}: expected KEY=V1,V2,... (keys: {', '.join(KEYS)})", WHERE)
    canonical = _canonical_for(key, text)
    raw = [v.strip() for v in rest.split(",")]
    if not rest.strip() or any(not v for v in raw):
        raise ConfigError(f"{text!r}: empty value (give {key}=V1,V2,... without empty items)", WHERE)
    values: list[str] = []
    problems: list[str] = []
    for value in raw:
        try:
            values.append(canonical(value))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{text!r}: {'; '.join(problems)}", WHERE)
    repeated = [v for v in dict.fromkeys(values) if values.count(v) > 1]
    if repeated:
        raise ConfigError(f"{text!r}: {key} lists {', '.join(repeated)} more than once", WHERE)
    return key, tuple(values)


def parse_axes(texts: Sequence[str]) -> list[Axis]:
    """Every --axis flag, in order; one key twice (even with other values) is an error."""
    axes = [parse_axis(t) for t in texts]
    _check_keys_once(axes)
    return axes


def _canonical_for(key: str, text: str) -> Callable[[str], str]:
    if key in _VALUES:
        return _VALUES[key]
    if key.startswith(ACS_PREFIX):
        port = key.removeprefix(ACS_PREFIX)
        if not _PORT_ID.match(port):
            raise ConfigError(
                f"{text!r}: {key!r} does not name a port (acs.<root port id>, e.g. acs.rp1)", WHERE
            )
        return _ACS_VALUE
    close = difflib.get_close_matches(key, _VALUES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{text!r}: unknown axis key {key!r}{hint}; keys: {', '.join(KEYS)}", WHERE)


def _check_keys_once(axes: Sequence[Axis]) -> None:
    keys = [key for key, _ in axes]
    twice = [k for k in dict.fromkeys(keys) if keys.count(k) > 1]
    if twice:
        raise ConfigError(
            f"axis {', '.join(twice)} given more than once: list all values in one flag (KEY=V1,V2)", WHERE
        )


def variant_name(base: str, axes: AxisValues) -> str:
    """'switch-p2p' + (('cpu', 'EPYC-Rome'),) -> 'switch-p2p[cpu=EPYC-Rome]'; the base alone without axes."""
    if not axes:
        return base
    return f"{base}[{','.join(f'{k}={v}' for k, v in axes)}]"


def axes_argv(axes: AxisValues) -> list[str]:
    """The flags that make exactly this one variant again: ['--axis', 'cpu=EPYC-Rome', ...]."""
    return [arg for key, value in axes for arg in (WHERE, f"{key}={value}")]


def expand(base: Topology, axes: Sequence[Axis]) -> list[Variant]:
    """Every combination of the axes' values applied to `base`, first axis slowest, values in the order
    given; each validated by the model. All invalid combinations are reported in one ConfigError."""
    if not axes:
        return [Variant(base, ())]
    _check_keys_once(axes)
    _check_ports(base, axes)
    count = math.prod(len(values) for _, values in axes)
    if count > MAX_VARIANTS:
        sizes = " x ".join(f"{len(values)} {key}" for key, values in axes)
        raise ConfigError(
            f"{sizes} make {count} variants of {base.name}, more than {MAX_VARIANTS}: "
            "each is a VM boot per kernel; list fewer values",
            WHERE,
        )
    variants: list[Variant] = []
    problems: list[str] = []
    keys = [key for key, _ in axes]
    for combination in itertools.product(*(values for _, values in axes)):
        chosen: AxisValues = tuple(zip(keys, combination, strict=True))
        name = variant_name(base.name, chosen)
        try:
            topo = _apply(base, chosen)
        except ValidationError as exc:
            problems += [f"  {name}: {p}" for p in dict.fromkeys(_problems(exc))]
            continue
        variants.append(Variant(topo.model_copy(update={"name": name}), chosen))
    if problems:
        bad = count - len(variants)
        raise ConfigError(
            f"{bad} of {count} variants of {base.name} are invalid:\n" + "\n".join(problems), WHERE
        )
    return variants


def _check_ports(base: Topology, axes: Sequence[Axis]) -> None:
    roots = [rp.id for rp in base.root_ports]
    downstream = {dp.id for sw in base.switches for dp in sw.downstream}
    problems = []
    for key, _ in axes:
        port = key.removeprefix(ACS_PREFIX)
        if not key.startswith(ACS_PREFIX) or port in roots:
            continue
        if port in downstream:
            why = f"{port!r} is a switch downstream port (QEMU's xio3130-downstream has no ACS capability)"
        else:
            why = f"{base.name} has no port {port!r}"
        problems.append(f"{key}: {why}; root ports of {base.name}: {', '.join(roots)}")
    if problems:
        raise ConfigError("\n".join(problems), WHERE)


def _apply(base: Topology, chosen: AxisValues) -> Topology:
    data: dict[str, Any] = base.model_dump()
    for key, value in chosen:
        if key == "cpu":
            data["machine"]["cpu"] = value
        elif key == "smp":
            data["machine"]["smp"] = int(value)
        elif key == "memory":
            data["machine"]["memory"] = value
        elif key == "iommu":
            data["iommu"] = value
        elif key == "iommu_passthrough":
            data["iommu_passthrough"] = value == "true"
        else:
            port = key.removeprefix(ACS_PREFIX)
            for rp in data["root_ports"]:
                if rp["id"] == port:
                    rp["acs"] = value == "on"
    data["description"] = _description(base, chosen)
    return Topology.model_validate(data)


def _description(base: Topology, chosen: AxisValues) -> str:
    was = _base_values(base)
    changes = []
    for key, value in chosen:
        before = was.get(key)
        changes.append(f"{key} {value} (as the base)" if before == value else f"{key} {before} -> {value}")
    return f"variant of {base.name}: {', '.join(changes)}. {base.name}: {base.description}"


def _base_values(base: Topology) -> Mapping[str, str]:
    """The base's value of every key, spelled as parse_axis spells values."""
    values = {
        "cpu": base.machine.cpu,
        "iommu": base.iommu,
        "iommu_passthrough": "true" if base.iommu_passthrough else "false",
        "smp": str(base.machine.smp),
        "memory": format_size(base.machine.memory),
    }
    values.update({f"{ACS_PREFIX}{rp.id}": "on" if rp.acs else "off" for rp in base.root_ports})
    return values


def _problems(exc: ValidationError) -> list[str]:
    """The model's complaints as 'field.path: message', cross-field problems one each."""
    out: list[str] = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        loc: Loc = tuple(err["loc"])
        if isinstance(cause, CrossFieldError):
            out += [f"{format_loc((*loc, *where))}: {msg}" for where, msg in cause.problems]
        else:
            out.append(f"{format_loc(loc)}: {_message(err)}")
    return out


def _message(err: ErrorDetails) -> str:
    if err["type"] == "value_error":
        return err["msg"].removeprefix("Value error, ")
    msg = err["msg"][:1].lower() + err["msg"][1:]
    value = err.get("input")
    return f"{msg}, got {value!r}" if isinstance(value, str | int | float | bool) else msg


def variant_from_json(data: Mapping[str, Any]) -> Topology:
    """A Topology from its dump (a cell's topology.json), the variant name included: the model checks
    everything but the name, which a variant has in its readable [key=value] form."""
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("topology dump without a name")
    base = name.partition("[")[0]
    topo = Topology.model_validate({**data, "name": base})
    return topo.model_copy(update={"name": name})
