"""The guest's half of the host agent (harness/vm/host_agent.py): request and response files in the
shared run directory. Stdlib only: the guest imports it over 9p at every boot.

The guest writes `<run_dir>/requests/<name>.json` (write a temporary file, then rename):

    {"op": "device_del", "id": "exporter"}   unplug a device (QMP device_del)
    {"op": "device_add", "id": "exporter"}   plug it back exactly as the topology defined it

and waits for `<run_dir>/responses/<name>.json`:

    {"request": name, "op": ..., "ok": true, "return": ..., "elapsed_s": ...}
    {"request": name, "op": ..., "ok": false, "error": "..."}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.jsonfile import write_record

REQUESTS_DIR = "requests"
RESPONSES_DIR = "responses"


class RequestError(ValueError):
    """A request file the agent cannot act on."""


@dataclass(frozen=True)
class Request:
    name: str
    op: str
    device: str


def parse_request(name: str, text: str) -> Request:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("expected a JSON object")
    op, device = data.get("op"), data.get("id")
    if op not in ("device_del", "device_add"):
        raise RequestError(f"unknown op {op!r} (device_del, device_add)")
    if not isinstance(device, str) or not device:
        raise RequestError("id: expected a device id")
    return Request(name, op, device)


def guest_request_path(run_dir: Path, name: str) -> Path:
    return run_dir / REQUESTS_DIR / f"{name}.json"


def write_request(run_dir: Path, name: str, op: str, device: str) -> Path:
    """The guest's side: put a request where the agent looks (used by the guest tests' helper)."""
    path = guest_request_path(run_dir, name)
    write_record(path, {"op": op, "id": device})
    return path


def read_response(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = run_dir / RESPONSES_DIR / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data
