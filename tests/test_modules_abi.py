"""guest_tests/modules/hil_importer_abi.h against its ctypes mirror (guest_tests/hil_importer/abi.py).

The header is compiled on the host by a generated C program that prints every size, offset, constant
and ioctl number; the ctypes side must agree on each. A layout drift would otherwise only show in the
guest as EFAULT/ENOTTY or as garbage.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

GUEST_TESTS = Path(__file__).resolve().parents[1] / "guest_tests"
HEADER_DIR = GUEST_TESTS / "modules"

CONSTANTS = {  # C macro -> name in abi.py
    "HIL_IMPORTER_ABI_VERSION": "ABI_VERSION",
    "HIL_IMPORTER_IOC_MAGIC": "MAGIC",
    "HIL_SG_MAX_CAPACITY": "SG_MAX_CAPACITY",
    "HIL_FEAT_REVOKE_CB": "FEAT_REVOKE_CB",
    "HIL_FEAT_INVALIDATE_MAPPINGS": "FEAT_INVALIDATE_MAPPINGS",
    "HIL_FEAT_MOVE_NOTIFY": "FEAT_MOVE_NOTIFY",
    "HIL_FEAT_ATTACH_REVOCABLE": "FEAT_ATTACH_REVOCABLE",
    "HIL_FEAT_UMEM_REVOCABLE": "FEAT_UMEM_REVOCABLE",
    "HIL_FEAT_UMEM_PINNED_DMA_DEV": "FEAT_UMEM_PINNED_DMA_DEV",
    "HIL_P2P_NO_P2P": "P2P_NO_P2P",
    "HIL_P2P_NO_REVOKE_CB": "P2P_NO_REVOKE_CB",
    "HIL_P2P_STUBBORN": "P2P_STUBBORN",
    "HIL_DMA_BIDIRECTIONAL": "DMA_BIDIRECTIONAL",
    "HIL_DMA_TO_DEVICE": "DMA_TO_DEVICE",
    "HIL_DMA_FROM_DEVICE": "DMA_FROM_DEVICE",
    "HIL_EDU_FROM_ADDR": "EDU_FROM_ADDR",
    "HIL_EDU_TO_ADDR": "EDU_TO_ADDR",
    "HIL_EDU_BUFFER_SIZE": "EDU_BUFFER_SIZE",
    "HIL_RDMA_REVOCABLE": "RDMA_REVOCABLE",
    "HIL_RDMA_PINNED": "RDMA_PINNED",
    "HIL_RDMA_DYNAMIC": "RDMA_DYNAMIC",
    "HIL_IOC_VERSION": "HIL_IOC_VERSION",
    "HIL_P2P_IOC_ATTACH": "HIL_P2P_IOC_ATTACH",
    "HIL_P2P_IOC_MAP": "HIL_P2P_IOC_MAP",
    "HIL_P2P_IOC_SG": "HIL_P2P_IOC_SG",
    "HIL_P2P_IOC_UNMAP": "HIL_P2P_IOC_UNMAP",
    "HIL_P2P_IOC_DETACH": "HIL_P2P_IOC_DETACH",
    "HIL_P2P_IOC_STATUS": "HIL_P2P_IOC_STATUS",
    "HIL_P2P_IOC_EDU_DMA": "HIL_P2P_IOC_EDU_DMA",
    "HIL_RDMA_IOC_REG": "HIL_RDMA_IOC_REG",
    "HIL_RDMA_IOC_SG": "HIL_RDMA_IOC_SG",
    "HIL_RDMA_IOC_DEREG": "HIL_RDMA_IOC_DEREG",
    "HIL_RDMA_IOC_STATUS": "HIL_RDMA_IOC_STATUS",
}


def _load(name: str) -> ModuleType:
    if str(GUEST_TESTS) not in sys.path:
        sys.path.insert(0, str(GUEST_TESTS))
    return importlib.import_module(name)


abi = _load("hil_importer.abi")


def c_program() -> str:
    """A program printing {"sizeof": {...}, "offsetof": {...}, "const": {...}} for the header."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "hil_importer_abi.h"', "int main(void) {"]
    lines.append('printf("{\\"sizeof\\": {");')
    structs = abi.STRUCTS
    for i, struct in enumerate(structs):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{struct.__name__}\\": %zu", sizeof(struct {struct.__name__}));')
    lines.append('printf("}, \\"offsetof\\": {");')
    first = True
    for struct in structs:
        for field_name, *_ in struct._fields_:
            sep = "" if first else ","
            first = False
            key = f"{struct.__name__}.{field_name}"
            lines.append(
                f'printf("{sep}\\"{key}\\": %zu", offsetof(struct {struct.__name__}, {field_name}));'
            )
    lines.append('printf("}, \\"const\\": {");')
    for i, macro in enumerate(CONSTANTS):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{macro}\\": %llu", (unsigned long long)({macro}));')
    lines += ['printf("}}\\n");', "return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc to compile the ABI header")
    work = tmp_path_factory.mktemp("abi")
    (work / "layout.c").write_text(c_program())
    build = subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(HEADER_DIR), "-o", str(work / "layout"),
                            str(work / "layout.c")], capture_output=True, text=True, check=False)  # fmt: skip
    if build.returncode != 0:
        if "linux/types.h" in build.stderr:
            pytest.skip("host has no kernel uapi headers (linux-libc-dev)")
        pytest.fail(f"the ABI header does not compile in userspace:\n{build.stderr}")
    run = subprocess.run([str(work / "layout")], capture_output=True, text=True, check=True)
    data: dict[str, dict[str, int]] = json.loads(run.stdout)
    return data


@pytest.mark.parametrize("struct", abi.STRUCTS, ids=lambda s: s.__name__)
def test_struct_layout(c_layout: dict[str, dict[str, int]], struct: type[ctypes.Structure]) -> None:
    assert ctypes.sizeof(struct) == c_layout["sizeof"][struct.__name__]
    for field_name, *_ in struct._fields_:
        offset = getattr(struct, field_name).offset
        assert offset == c_layout["offsetof"][f"{struct.__name__}.{field_name}"], field_name


@pytest.mark.parametrize(("macro", "name"), sorted(CONSTANTS.items()))
def test_constant(c_layout: dict[str, dict[str, int]], macro: str, name: str) -> None:
    assert getattr(abi, name) == c_layout["const"][macro]


def test_structs_have_no_hidden_padding() -> None:
    """Explicit pad fields only: the same layout for every compiler and for 32-bit userspace."""
    for struct in abi.STRUCTS:
        used = sum(ctypes.sizeof(ctype) for _, ctype in struct._fields_)
        assert used == ctypes.sizeof(struct), struct.__name__


def test_request_numbers_pinned() -> None:
    """_IOWR(0xB9, 1, 40-byte struct) = 3 << 30 | 40 << 16 | 0xB9 << 8 | 1, worked out by hand."""
    assert abi.HIL_P2P_IOC_ATTACH == 0xC028B901
    assert abi.HIL_IOC_VERSION == 0x8008B900
    assert abi.HIL_P2P_IOC_UNMAP == 0x4008B904
