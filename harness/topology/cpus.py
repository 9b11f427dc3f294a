"""The QEMU -cpu models a topology may name, and what the guest kernel sees of each.

Only vendor and family matter to p2p-hil: drivers/pci/p2pdma.c allows peer-to-peer
through the host bridge on any AMD CPU of family >= 0x17 (Zen), so the vCPU model is
a routing knob. The figures are what a guest reads in /proc/cpuinfo under TCG
(max and qemu64 measured with QEMU 10.0: both report AuthenticAMD, families 6 and 15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Vendor = Literal["intel", "amd"]

# p2pdma.c: cpu_supports_p2pdma() is true for X86_VENDOR_AMD with c->x86 >= 0x17.
ZEN_FAMILY = 0x17


@dataclass(frozen=True)
class CpuModel:
    name: str
    vendor: Vendor
    family: int

    @property
    def p2pdma_through_host_bridge(self) -> bool:
        """True when the kernel's CPU check alone allows p2p through the host bridge."""
        return self.vendor == "amd" and self.family >= ZEN_FAMILY


_MODELS = (
    CpuModel("Skylake-Server", "intel", 6),
    CpuModel("Cascadelake-Server", "intel", 6),
    CpuModel("Icelake-Server", "intel", 6),
    CpuModel("SapphireRapids", "intel", 6),
    CpuModel("EPYC", "amd", 0x17),
    CpuModel("EPYC-Rome", "amd", 0x17),
    CpuModel("EPYC-Milan", "amd", 0x19),
    CpuModel("EPYC-Genoa", "amd", 0x19),
    # Not Zen, so they behave like the Intel models for p2p. Under KVM "max" is the host
    # CPU instead; these figures are TCG's.
    CpuModel("max", "amd", 6),
    CpuModel("qemu64", "amd", 15),
)

CPU_MODELS: dict[str, CpuModel] = {m.name: m for m in _MODELS}


def cpu_model(name: str) -> CpuModel:
    """The model called `name`; ValueError naming the valid ones otherwise."""
    try:
        return CPU_MODELS[name]
    except KeyError:
        valid = ", ".join(CPU_MODELS)
        raise ValueError(f"unknown cpu model {name!r}; valid: {valid}") from None
