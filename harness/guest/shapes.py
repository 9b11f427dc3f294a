"""The export shapes the routing tests use, shared by host (oracle counts) and guest (the exports).

Pure and stdlib-only: the guest imports it from the read-only host tree.
"""

from __future__ import annotations

PAGE = 4096
GIB = 1 << 30
# ALIGN_DOWN(UINT_MAX, PAGE_SIZE): fill_sg_entry() never makes a longer scatterlist entry.
MAX_SG_ENT_SZ = (0xFFFFFFFF // PAGE) * PAGE


def export_shapes(bar_size: int) -> dict[str, list[tuple[int, int]]]:
    """Named (offset, length) range lists exported from a BAR of `bar_size`.

    Every route is covered with one and with several ranges; a BAR over 4 GiB adds ranges of 4 GiB and
    more, where fill_sg_entry() must split (exact sizes chosen to land on and just past the limit).
    """
    page = PAGE
    shapes = {
        "whole": [(0, bar_size)],
        "slice": [(bar_size // 4, bar_size // 2)],
        "multi": [(0, page), (bar_size // 2, 16 * page), (bar_size - 2 * page, 2 * page)],
    }
    if bar_size > 4 * GIB:
        shapes["4g"] = [(0, 4 * GIB)]
        shapes["4g_plus_page"] = [(0, 4 * GIB + page)]
        shapes["max_entry"] = [(0, MAX_SG_ENT_SZ)]
    if bar_size >= 8 * GIB:
        shapes["multi_4g"] = [(0, 4 * GIB + 2 * page), (5 * GIB, 2 * GIB), (bar_size - page, page)]
    return shapes
