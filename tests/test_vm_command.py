from __future__ import annotations

import shlex
from pathlib import Path

from harness.vm.accel import classify_probe
from harness.vm.command import TCG_ARGS, VngSpec, guarded_argv, vng_argv

SPEC = VngSpec(
    vng="vng",
    kernel=Path("/k/usr/lib/modules/7.2/vmlinuz"),
    accel="tcg",
    memory="1G",
    cpus=2,
    append=("intel_iommu=on",),
    qemu_args=(
        "-machine",
        "q35,kernel-irqchip=split",
        "-object",
        "memory-backend-file,id=m,mem-path=/tmp/dir with space/e.shm,size=64M,share=on",
    ),
    guest_command="/venv/bin/python -m harness.guest.entry /runs/x/plan.json",
    rwdirs=(Path("/runs/x"),),
)


def test_vng_argv_is_a_list_and_qemu_args_survive_the_shell_round_trip() -> None:
    argv = vng_argv(SPEC)
    assert argv[:3] == ["vng", "--run", "/k/usr/lib/modules/7.2/vmlinuz"]
    assert "--disable-kvm" in argv and "--disable-microvm" in argv
    opts = next(a for a in argv if a.startswith("--qemu-opts="))
    # vng pastes the value into `sh -c`; what QEMU finally sees is the shell's split of it.
    assert shlex.split(opts.removeprefix("--qemu-opts=")) == [*TCG_ARGS, *SPEC.qemu_args]
    assert argv[argv.index("--rwdir") + 1] == "/runs/x"
    assert argv[-2:] == ["--exec", SPEC.guest_command]


def test_kvm_keeps_kvm_enabled() -> None:
    spec = VngSpec(**{**SPEC.__dict__, "accel": "kvm"})
    argv = vng_argv(spec)
    assert "--disable-kvm" not in argv
    assert "thread=single" not in " ".join(argv), "single-threaded emulation is a TCG setting"


def test_guarded_argv_wraps_with_parent_and_scratch() -> None:
    argv = guarded_argv(["vng", "--run", "k"], 1234, Path("/tmp/s"))
    assert argv[1:3] == ["-m", "harness.vm.guardian"]
    assert argv[argv.index("--parent") + 1] == "1234"
    assert argv[argv.index("--") + 1 :] == ["vng", "--run", "k"]


def test_probe_classification() -> None:
    assert classify_probe("...\nVFS: Unable to mount root fs on unknown-block(0,0)\n").accel == "kvm"
    broken = classify_probe("KVM internal error. Suberror: 1\nemulation failure\n")
    assert broken.accel == "tcg" and "internal error" in broken.reason
    assert classify_probe("").accel == "tcg"


def test_root_is_mounted_with_the_guest_cache_over_9p() -> None:
    argv = vng_argv(SPEC)
    assert "--force-9p" in argv  # the flags are 9p's: virtiofs (when virtiofsd exists) would reject them
    words = argv[argv.index("--append") + 1].split()
    assert words[: len(SPEC.append)] == list(SPEC.append)
    rootflags = [w.removeprefix("rootflags=") for w in words if w.startswith("rootflags=")]
    # vng puts its own rootflags= earlier on the kernel command line; the last one is what counts.
    assert words[-1].startswith("rootflags=") and len(rootflags) == 1
    options = rootflags[0].split(",")
    assert "cache=loose" in options
    # vng's own options are kept: without trans=virtio and 9p2000.L the root does not mount at all.
    assert {"version=9p2000.L", "trans=virtio", "access=any"} <= set(options)


def test_root_cache_can_be_turned_off() -> None:
    argv = vng_argv(VngSpec(**{**SPEC.__dict__, "cache_root": False}))
    assert "--force-9p" not in argv
    assert argv[argv.index("--append") + 1] == "intel_iommu=on"
    no_append = vng_argv(VngSpec(**{**SPEC.__dict__, "cache_root": False, "append": ()}))
    assert "--append" not in no_append
