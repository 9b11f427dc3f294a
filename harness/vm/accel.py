"""KVM or TCG, decided by booting the real kernel for a moment, never by the presence of /dev/kvm.

On nested hosts /dev/kvm can exist, accept a real-mode probe, and still die with
"KVM internal error" once the kernel enters long mode. So the probe boots the kernel under
test until it fails to mount a root file system: that proves the whole early boot runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pexpect

Accel = Literal["kvm", "tcg"]

PROBE_TIMEOUT_S = 15.0
# Lines that prove the kernel got through early init to the point of looking for a root fs.
_REACHED_ROOT_MOUNT = re.compile(
    r"VFS: Unable to mount root|No working init found|Kernel panic - not syncing"
)


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def probe_argv(qemu: str, kernel_image: Path) -> list[str]:
    """A minimal KVM boot that ends on its own with a root-mount panic."""
    return [
        qemu,
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel_image),
        "-append",
        "console=ttyS0 panic=-1 root=/dev/nonexistent rootwait=0 loglevel=4",
    ]


def classify_probe(output: str) -> AccelChoice:
    """Pure: what a probe's console output says about KVM."""
    if _REACHED_ROOT_MOUNT.search(output):
        return AccelChoice("kvm", "KVM probe boot reached the root mount")
    if "KVM internal error" in output:
        return AccelChoice("tcg", "KVM is present but broken here (KVM internal error in a probe boot)")
    last = output.strip().splitlines()[-1:] or ["no output"]
    return AccelChoice("tcg", f"KVM probe boot did not reach the root mount ({last[0][:120]})")


def kvm_usable_device() -> str | None:
    """None when /dev/kvm can be opened, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def choose_accelerator(qemu: str, kernel_image: Path, requested: str = "auto") -> AccelChoice:
    if requested == "tcg":
        return AccelChoice("tcg", "TCG requested")
    problem = kvm_usable_device()
    if problem is not None:
        if requested == "kvm":
            return AccelChoice("kvm", f"KVM requested although {problem}")
        return AccelChoice("tcg", problem)
    if requested == "kvm":
        return AccelChoice("kvm", "KVM requested")
    # QEMU pauses rather than exits on a KVM internal error, so watch the console and stop early.
    child = pexpect.spawn(
        probe_argv(qemu, kernel_image)[0],
        probe_argv(qemu, kernel_image)[1:],
        encoding="utf-8",
        codec_errors="replace",
        timeout=PROBE_TIMEOUT_S,
    )
    try:
        index = child.expect([_REACHED_ROOT_MOUNT, "KVM internal error", pexpect.EOF, pexpect.TIMEOUT])
        output = (child.before or "") + (child.after if isinstance(child.after, str) else "")
    finally:
        child.close(force=True)
    if index == 3:
        return AccelChoice("tcg", f"KVM probe boot made no progress in {PROBE_TIMEOUT_S:.0f} s")
    return classify_probe(output)


def _host_boot_key(qemu: str) -> str:
    """Changes whenever KVM's usability could: a host reboot or another QEMU."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot_id} {os.uname().release} {qemu_version(qemu)}"


def remembered_accelerator(qemu: str, cache_file: Path) -> AccelChoice | None:
    """The probe's answer from earlier in this host boot, if any (no VM is started)."""
    try:
        saved = json.loads(cache_file.read_text())
        if saved.get("key") == _host_boot_key(qemu):
            return AccelChoice(saved["accel"], saved["reason"] + " (probed earlier this host boot)")
    except (OSError, ValueError, KeyError):
        pass
    return None


def cached_accelerator(qemu: str, kernel_image: Path, requested: str, cache_file: Path) -> AccelChoice:
    """choose_accelerator, remembered for the current host boot (the probe costs seconds)."""
    if requested != "auto":
        return choose_accelerator(qemu, kernel_image, requested)
    remembered = remembered_accelerator(qemu, cache_file)
    if remembered is not None:
        return remembered
    choice = choose_accelerator(qemu, kernel_image, requested)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    key = _host_boot_key(qemu)
    cache_file.write_text(json.dumps({"key": key, "accel": choice.accel, "reason": choice.reason}))
    return choice


def qemu_version(qemu: str) -> str:
    proc = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\S+)", proc.stdout)
    return match.group(1) if match else "unknown"
