"""Attachments per dma-buf from debugfs dma_buf/bufinfo (drivers/dma-buf/dma-buf.c dma_buf_debug_show)."""

from __future__ import annotations

from pathlib import Path

BUFINFO = Path("/sys/kernel/debug/dma_buf/bufinfo")


def parse_attachments(text: str) -> dict[int, list[str]]:
    """inode -> attached device names, in bufinfo's order (pure).

    Per buffer: the "%08zu\\t...\\t<ino>\\t<name>" line, "\\t<usage> fence:..." lines, "\\tAttached
    Devices:", one "\\t<dev_name>" line per attachment, then "Total N devices attached".
    """
    result: dict[int, list[str]] = {}
    current: list[str] | None = None
    in_devices = False
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 7 and parts[0].isdigit():
            current = result.setdefault(int(parts[5]), [])
            in_devices = False
        elif current is not None and line == "\tAttached Devices:":
            in_devices = True
        elif current is not None and line.startswith("Total ") and line.endswith(" devices attached"):
            current, in_devices = None, False
        elif in_devices and current is not None and line.startswith("\t"):
            current.append(line.strip())
    return result


def attached_devices(ino: int) -> list[str] | None:
    """Devices attached to the dma-buf with inode `ino`; None without debugfs. KeyError if unknown."""
    try:
        text = BUFINFO.read_text()
    except OSError:
        return None
    return parse_attachments(text)[ino]
