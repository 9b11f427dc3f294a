"""Console parsing: the guest's serial output turned into events (pure, incremental)."""

from harness.console.events import (
    BootMilestone,
    ConsoleScanner,
    Event,
    KernelProblem,
    MalformedMarker,
    Marker,
    scan,
    tail,
)

__all__ = [
    "BootMilestone",
    "ConsoleScanner",
    "Event",
    "KernelProblem",
    "MalformedMarker",
    "Marker",
    "scan",
    "tail",
]
