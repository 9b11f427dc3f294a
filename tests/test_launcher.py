"""The `hil` launcher's package step, on a host where QEMU is missing (hidden from PATH) and the user
is not root (a shim `id`): it prints the apt commands it would run and stops, installing nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.paths import REPO_ROOT


def _launcher_without_qemu(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for directory in (Path("/usr/local/bin"), Path("/usr/bin")):
        for entry in directory.iterdir() if directory.is_dir() else ():
            target = fake_bin / entry.name
            if not entry.name.startswith("qemu-system-") and not target.exists():
                target.symlink_to(entry)
    (fake_bin / "id").unlink(missing_ok=True)
    (fake_bin / "id").write_text("#!/bin/sh\necho 1000\n")  # "not root": print, never install
    (fake_bin / "id").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    return subprocess.run(
        ["/bin/bash", str(REPO_ROOT / "hil"), "run", "--dry-run"],
        env={**env, "PATH": str(fake_bin)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_qemu_is_installed_without_its_recommended_packages(tmp_path: Path) -> None:
    proc = _launcher_without_qemu(tmp_path)
    # 2: "run as root"; before, QEMU being the only missing package ended the script with a silent 1
    assert proc.returncode == 2, proc.stderr
    steps = [line.strip() for line in proc.stderr.splitlines() if line.startswith("    ")]
    qemu = [step for step in steps if step.endswith(" qemu-system-x86")]
    assert len(qemu) == 1, proc.stderr
    assert "apt-get install -y -q --no-install-recommends" in qemu[0]
    assert all("--no-install-recommends" in step for step in steps if "apt-get install" in step)
