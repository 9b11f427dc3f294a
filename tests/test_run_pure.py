from __future__ import annotations

from harness.run import qemu_abort_line

ABORT = (
    "[   43.782058] vfio-pci 0000:03:00.0: resetting\n"
    "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
    "`section_index < d->map.sections_nb' failed.\n"
)


def test_qemu_abort_is_recognised_from_the_recorded_console() -> None:
    line = qemu_abort_line(ABORT)
    assert line is not None and "iotlb_to_section" in line


def test_guest_text_mentioning_assertions_is_not_a_qemu_abort() -> None:
    assert qemu_abort_line("[ 1.0] test: Assertion `x' failed.\nKernel panic - not syncing\n") is None
    assert qemu_abort_line("") is None
