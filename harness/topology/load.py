"""Reading topology files: YAML -> Topology, every problem as one ConfigError line.

A line reads "<file>: <field path>: <what is wrong> (line N)", e.g.
"qemu_configs/topologies/x.yaml: devices[1].parent: no port named 'dp9' (ports: rp1, dp1) (line 14)".
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from harness import paths
from harness.errors import ConfigError
from harness.topology.model import CrossFieldError, Loc, Topology, format_loc

_SUFFIXES = (".yaml", ".yml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would silently overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def topology_path(name_or_path: str | Path) -> Path:
    """A shipped name -> its file; anything that looks like a path -> itself."""
    text = str(name_or_path)
    if "/" in text or text.endswith(_SUFFIXES):
        return Path(text)
    path = paths.TOPOLOGY_DIR / f"{text}.yaml"
    if not path.is_file():
        shipped = ", ".join(p.stem for p in _shipped_files()) or "none"
        raise ConfigError(f"unknown topology {text!r}; shipped: {shipped} (or give a path to a .yaml file)")
    return path


def load_topology(name_or_path: str | Path) -> Topology:
    path = topology_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _error(path, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise _error(path, [f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return parse_topology(text, str(path))


def list_topologies() -> list[Topology]:
    return [load_topology(p) for p in _shipped_files()]


def parse_topology(text: str, source: str) -> Topology:
    """Validate YAML text; `source` names it in messages."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _error(source, [f"not valid YAML: {exc.problem or exc.context}{where}"]) from None
    except yaml.YAMLError as exc:
        raise _error(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise _error(source, [f"(top level): expected a mapping of fields (name, machine, ...), got {got}"])
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, node) for err in _expand(exc.errors())]
        raise _error(source, list(dict.fromkeys(lines))) from None


def _shipped_files() -> list[Path]:
    return sorted(paths.TOPOLOGY_DIR.glob("*.yaml"))


def _error(source: str | Path, problems: list[str]) -> ConfigError:
    err = ConfigError("\n".join(f"{source}: {p}" for p in problems))
    err.where = str(source)
    return err


def _expand(errors: list[ErrorDetails]) -> list[tuple[Loc, str, ErrorDetails]]:
    """Pydantic errors -> (location, message, original); cross-field problems become one each."""
    out: list[tuple[Loc, str, ErrorDetails]] = []
    for err in errors:
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, CrossFieldError):
            out += [((*err["loc"], *loc), msg, err) for loc, msg in cause.problems]
        else:
            out.append((tuple(err["loc"]), _message(err), err))
    return out


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown field {loc[-1]!r}{hint}"
    if kind == "missing":
        return "missing (required)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        msg += f", got {value!r}"
    else:
        msg += f", got a {type(value).__name__}"
    return msg


def _describe(item: tuple[Loc, str, ErrorDetails], node: yaml.Node | None) -> str:
    loc, msg, _ = item
    line = _line_of(node, loc)
    return f"{format_loc(loc)}: {msg}" + (f" (line {line})" if line else "")


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the deepest YAML node along `loc` (the key itself for unknown keys)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(loc: Loc) -> list[str]:
    """Field names of the model found by following `loc` from Topology (empty if none)."""
    model: type[BaseModel] | None = Topology
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None
