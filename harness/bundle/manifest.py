"""manifest.json of a bundle: what the cell was, what it ran on, and the sha256 of every other member.

Schema 1. A reader refuses a newer schema (its fields may mean what this version cannot know) and a
manifest that lacks what reproduce needs, each with the field named.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.errors import ConfigError

BUNDLE_SCHEMA = 1
MANIFEST = "manifest.json"

# Members at the bundle's top level, by what they are.
RESULTS = "results.json"
CONSOLE = "console.log"
JUNIT = "junit.xml"
PLAN = "plan.json"
REPRODUCE = "reproduce.sh"
TOPOLOGY_JSON = "topology.json"
KNOWN_ISSUES = "known-issues.yaml"
KERNEL_CONFIG = "kernel.config"
README = "README.txt"
SERIES_DIR = "series"
TOPOLOGY_DIR = "topology"


@dataclass(frozen=True)
class Environment:
    """Where a cell ran (or is about to run again): the facts a reproduction compares."""

    harness_version: str = ""
    git_revision: str | None = None
    git_dirty: bool | None = None
    guest_sources_sha256: str = ""
    known_issues_sha256: str | None = None
    qemu_version: str | None = None
    accelerator: str = ""
    host_kernel: str = ""
    host: str = ""
    kernel_version: str | None = None
    kernel_source: str = ""


@dataclass(frozen=True)
class Manifest:
    schema: int
    created_at: str
    topology: str  # the machine's name (a variant's [key=value] name included)
    topology_given: str  # as the cell was asked for: a shipped name or a path
    topology_sha256: str
    topology_yaml: str | None  # member holding the YAML file the topology came from, if it was found
    topology_yaml_matches: bool | None  # that file (+ axes) still makes the machine that ran
    kernel_spec: str
    kernel_label: str
    kernel_image: str  # the path it booted from, on the original host
    kernel_config: str | None  # member, when the .config was found
    series: str | None  # member
    select: str | None
    axes: dict[str, str]
    timeout: float
    verdict: str
    environment: Environment
    hil_command: list[str]
    vng_command: list[str]
    qemu_topology_args: list[str]
    notes: list[str] = field(default_factory=list)  # what could not be bundled, and why
    files: dict[str, str] = field(default_factory=dict)  # member -> sha256, every member but this one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_REQUIRED = {f.name for f in fields(Manifest)} - {"notes"}
_ENV_FIELDS = {f.name for f in fields(Environment)}


def manifest_from_json(data: object, source: str) -> Manifest:
    """Checks the schema first (a newer one is refused before anything else is read), then each field."""
    if not isinstance(data, dict):
        raise ConfigError("manifest.json is not a JSON object", source)
    schema = data.get("schema")
    if not isinstance(schema, int):
        raise ConfigError(f"manifest.json: schema {schema!r} is not a schema number", source)
    if schema > BUNDLE_SCHEMA:
        raise ConfigError(
            f"manifest.json: bundle schema {schema} is newer than this p2p-hil reads ({BUNDLE_SCHEMA}); "
            "update p2p-hil to reproduce it",
            source,
        )
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise ConfigError(f"manifest.json: missing field(s) {', '.join(missing)}", source)
    env = data["environment"]
    files = data["files"]
    if not isinstance(env, dict) or not isinstance(files, dict):
        raise ConfigError("manifest.json: environment and files must be objects", source)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ConfigError("manifest.json: files: every entry must be member -> sha256 text", source)
    try:
        return Manifest(
            **{k: v for k, v in data.items() if k in _REQUIRED | {"notes"} and k != "environment"},
            environment=Environment(**{k: v for k, v in env.items() if k in _ENV_FIELDS}),
        )
    except TypeError as exc:
        raise ConfigError(f"manifest.json: {exc}", source) from None
