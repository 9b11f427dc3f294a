"""harness/kernels/modules.py without a kernel tree: probe sources, feature logic, make argv, keys,
manifests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.errors import BuildError
from harness.kernels import modules as m
from harness.kernels.kimage import KernelImage

ALL_YES = {p.feature: True for p in m.PROBES}
SPDX = "SPDX-License-Identifier: GPL-2.0"
GCC_LOG = """\
  CC [M]  /x/probes/probe_baseline.o
/x/probes/probe_move_notify.c:4:52: error: 'const struct dma_buf_attach_ops' has no member named 'move_notify'
/x/probes/probe_move_notify.c:4:14: error: the address of 'hil_cb' will always evaluate as 'true'
probe_import_ns_ident.c:3:18: error: 'DMA_BUF' undeclared here (not in a function)
probe_infiniband_user_mem.c:3:2: error: #error "CONFIG_INFINIBAND_USER_MEM is off: ib_umem_* are stubs"
"""


def test_probe_sources_one_file_per_probe_and_kbuild() -> None:
    files = m.probe_sources((m.BASELINE, *m.PROBES))
    assert set(files) == {"Kbuild", *(f"probe_{p.feature}.c" for p in (m.BASELINE, *m.PROBES))}
    kbuild = files["Kbuild"].splitlines()
    assert kbuild[0] == "ccflags-y += -Wno-error"  # warnings must not read as "feature missing"
    assert "obj-m += probe_invalidate_mappings.o" in kbuild
    assert all(
        text.startswith("// SPDX-License-Identifier: GPL-2.0\n") for n, text in files.items() if n != "Kbuild"
    )


def test_probe_names_are_unique_and_macros_prefixed() -> None:
    features = [p.feature for p in m.PROBES]
    assert len(features) == len(set(features))
    assert all(p.macro is None or p.macro.startswith("HIL_HAVE_") for p in m.PROBES)


def test_revocation_callback_probes_use_the_member_names() -> None:
    by_name = {p.feature: p for p in m.PROBES}
    assert ".invalidate_mappings = hil_cb" in m.probe_text(by_name["invalidate_mappings"])
    assert ".move_notify = hil_cb" in m.probe_text(by_name["move_notify"])


def test_probes_never_compare_function_addresses() -> None:
    # -Werror=address turned such a comparison into a false "missing" on 7.2 (seen while writing this).
    for probe in m.PROBES:
        assert "!= NULL" not in m.probe_text(probe), probe.feature


def test_every_probe_has_a_c_file_and_every_c_file_a_probe() -> None:
    probes = (m.BASELINE, *m.PROBES)
    assert all(m.probe_file(p).is_file() for p in probes)
    assert {p.name for p in m.PROBES_SRC.glob("*.c")} == {m.probe_file(p).name for p in probes}
    # Under MODULES_SRC, so their bytes are in sources_digest and hence in the cache key.
    assert m.PROBES_SRC.parent == m.MODULES_SRC


def test_probe_files_look_like_c() -> None:
    for path in sorted(m.PROBES_SRC.iterdir()):
        text = path.read_text()
        first, _, body = text.partition("\n")
        assert first in ("// " + SPDX, f"/* {SPDX} */"), path
        assert body.strip() and text.endswith("\n"), path
        # Escapes left behind by the move out of Python strings.
        assert not re.search(r"\\[nt\"]", text), path
        assert text.count("{") == text.count("}") and text.count("(") == text.count(")"), path
        assert "#include" in text, path


def test_probe_text_inlines_the_local_prologue() -> None:
    umem = {p.feature: m.probe_text(p) for p in m.PROBES if p.feature.startswith(("infiniband", "umem_"))}
    assert set(umem) == {"infiniband_user_mem", "umem_revocable", "umem_pinned_dma_device"}
    for feature, text in umem.items():
        # In the probe's own text, so that its #error is reported against probe_<feature>.c.
        assert '#error "CONFIG_INFINIBAND_USER_MEM is off' in text, feature
        assert "#include <rdma/ib_umem.h>" in text and '#include "' not in text, feature
        assert text.startswith("// SPDX-License-Identifier: GPL-2.0\n") and text.count("SPDX") == 1, feature


def test_probe_text_keeps_includes_of_files_it_does_not_have(tmp_path: Path) -> None:
    text = '// SPDX-License-Identifier: GPL-2.0\n#include "other.h"\nint x;\n'
    (tmp_path / "x.c").write_text(text)
    probe = m.Probe(feature="x", macro=None, missing="")
    assert m.probe_text(probe, tmp_path) == text
    (tmp_path / "other.h").write_text("/* SPDX-License-Identifier: GPL-2.0 */\nint y;\n")
    assert m.probe_text(probe, tmp_path) == "// SPDX-License-Identifier: GPL-2.0\nint y;\nint x;\n"


def test_changing_a_probe_file_changes_the_cache_key(tmp_path: Path) -> None:
    src = tmp_path / "modules"
    shutil.copytree(m.MODULES_SRC, src)
    before = m.modules_key("tree:abc", "gcc 12", src)
    assert before == m.modules_key("tree:abc", "gcc 12", src)
    probe = src / m.PROBES_SRC.name / "move_notify.c"
    probe.write_text(probe.read_text().replace("move_notify", "move_notify2"))
    assert m.modules_key("tree:abc", "gcc 12", src) != before


def test_changing_the_shared_prologue_changes_the_cache_key(tmp_path: Path) -> None:
    src = tmp_path / "modules"
    shutil.copytree(m.MODULES_SRC, src)
    before = m.modules_key("tree:abc", "gcc 12", src)
    header = src / m.PROBES_SRC.name / "needs_umem.h"
    header.write_text(header.read_text() + "#include <rdma/ib_verbs.h>\n")
    assert m.modules_key("tree:abc", "gcc 12", src) != before


def test_changing_the_probe_table_changes_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = m.modules_key("tree:abc", "gcc 12")
    reworded = tuple(m.Probe(p.feature, p.macro, p.missing + ".") for p in m.PROBES)
    monkeypatch.setattr(m, "PROBES", reworded)
    assert m.modules_key("tree:abc", "gcc 12") != before


def test_derived_revoke_callback() -> None:
    assert m.derived_features({"invalidate_mappings": True, "move_notify": False})["revoke_callback"]
    assert m.derived_features({"invalidate_mappings": False, "move_notify": True})["revoke_callback"]
    assert not m.derived_features({"invalidate_mappings": False, "move_notify": False})["revoke_callback"]


def test_feature_cflags_only_for_present_features() -> None:
    raw = {**ALL_YES, "move_notify": False, "import_ns_ident": False}
    flags = m.feature_cflags(raw)
    assert "-DHIL_HAVE_INVALIDATE_MAPPINGS" in flags
    assert "-DHIL_HAVE_MOVE_NOTIFY" not in flags
    assert "-DHIL_HAVE_IMPORT_NS_IDENT" not in flags
    assert all(f.startswith("-DHIL_HAVE_") for f in flags)


def test_probe_errors_first_error_per_probe() -> None:
    errors = m.probe_errors(GCC_LOG)
    assert errors == {
        "move_notify": "'const struct dma_buf_attach_ops' has no member named 'move_notify'",
        "import_ns_ident": "'DMA_BUF' undeclared here (not in a function)",
        "infiniband_user_mem": '#error "CONFIG_INFINIBAND_USER_MEM is off: ib_umem_* are stubs"',
    }


def test_feature_reasons_name_the_missing_interface_and_the_compiler_error() -> None:
    raw = {**ALL_YES, "invalidate_mappings": False, "move_notify": False}
    reasons = m.feature_reasons(raw, {"move_notify": "no member named 'move_notify'"})
    assert set(reasons) == {"invalidate_mappings", "move_notify", "revoke_callback"}
    assert reasons["move_notify"] == (
        "struct dma_buf_attach_ops has no move_notify (compile probe: no member named 'move_notify')"
    )
    assert "neither invalidate_mappings nor move_notify" in reasons["revoke_callback"]


def test_module_skips() -> None:
    assert m.module_skips(ALL_YES) == {}
    no_ib = m.module_skips({**ALL_YES, "infiniband_user_mem": False})
    assert set(no_ib) == {m.RDMA_MODULE}
    assert "INFINIBAND" in no_ib[m.RDMA_MODULE]
    assert set(m.module_skips({**ALL_YES, "dma_buf_dynamic_attach": False})) == {m.P2P_MODULE, m.RDMA_MODULE}


def test_module_build_vars() -> None:
    raw = {**ALL_YES, "move_notify": False}
    built = m.module_build_vars(raw, {}, [])
    assert "HIL_RDMA=m" in built
    cflags = next(v for v in built if v.startswith("HIL_FEATURE_CFLAGS="))
    assert "-DHIL_HAVE_INVALIDATE_MAPPINGS" in cflags and "MOVE_NOTIFY" not in cflags
    assert "HIL_RDMA=" in m.module_build_vars(raw, {m.RDMA_MODULE: "no IB"}, ["LLVM=1"])
    assert m.module_build_vars(raw, {m.RDMA_MODULE: "no IB"}, ["LLVM=1"])[0] == "LLVM=1"


def test_toolchain_vars_follow_the_kernel_config() -> None:
    assert m.toolchain_vars("CONFIG_CC_IS_GCC=y\nCONFIG_GCC_VERSION=120200\n") == []
    assert m.toolchain_vars('CONFIG_CC_VERSION_TEXT="clang"\nCONFIG_CC_IS_CLANG=y\n') == ["LLVM=1"]


def test_make_argv() -> None:
    argv = m.make_argv(Path("/k/o"), Path("/c/src"), ["modules"], variables=["HIL_RDMA=m"], jobs=2, nice=10)
    assert argv == ["nice", "-n", "10", "make", "-C", "/k/o", "M=/c/src", "-j2", "HIL_RDMA=m", "modules"]
    probes = m.make_argv(Path("/k"), Path("/p"), ["a.o", "b.o"], keep_going=True, nice=0)
    assert probes == ["make", "-C", "/k", "M=/p", "-j2", "-k", "a.o", "b.o"]


def test_entry_key_depends_on_every_input() -> None:
    base = m.entry_key("tree:abc", "src1", "gcc 12")
    assert base == m.entry_key("tree:abc", "src1", "gcc 12")
    others = {
        m.entry_key("tree:abd", "src1", "gcc 12"),
        m.entry_key("tree:abc", "src2", "gcc 12"),
        m.entry_key("tree:abc", "src1", "gcc 13"),
        m.entry_key("tree:abc", "src1", "gcc 12", "r2"),
        m.entry_key("tree:abc", "src1", "gcc 12", probes="p2"),
    }
    assert base not in others and len(others) == 5


def test_sources_digest_ignores_build_products(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text("int a;\n")
    (tmp_path / "Kbuild").write_text("obj-m += a.o\n")
    before = m.sources_digest(tmp_path)
    (tmp_path / "a.o").write_bytes(b"\x7fELF")
    (tmp_path / "a.ko").write_bytes(b"\x7fELF")
    assert m.sources_digest(tmp_path) == before
    (tmp_path / "a.c").write_text("int b;\n")
    assert m.sources_digest(tmp_path) != before


def test_tree_identity_changes_with_symvers(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text("CONFIG_X=y\n")
    (tmp_path / "Module.symvers").write_text("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n")
    first = m.tree_identity(tmp_path)
    (tmp_path / "Module.symvers").write_text("0x2\tfoo\tvmlinux\tEXPORT_SYMBOL\t\n")
    assert m.tree_identity(tmp_path) != first


def test_the_real_sources_are_in_the_digest() -> None:
    names = {p.name for p in m.MODULES_SRC.iterdir()}
    assert {"Kbuild", "hil_importer_abi.h", "hil_p2p_importer.c", "hil_rdma_importer.c"} <= names


def test_stock_kernel_gets_an_empty_set_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    kernel = KernelImage(spec="debian:7.2", version="7.2.13+deb14-amd64", image=tmp_path / "vmlinuz")
    lines: list[str] = []
    modules = m.build_test_modules(kernel, tmp_path / "out", lines.append)
    assert modules.paths == {}
    assert modules.out_dir is not None and modules.out_dir.parent == tmp_path / "out"
    assert "debian:7.2 has no build tree" in modules.skipped[m.P2P_MODULE]
    assert modules.skipped[m.RDMA_MODULE] == modules.skipped[m.P2P_MODULE]
    manifest = json.loads((modules.out_dir / m.MANIFEST).read_text())
    assert manifest["format"] == m.MANIFEST_FORMAT
    assert manifest["kernel"]["version"] == kernel.version
    assert manifest["modules"] == {}
    again = m.build_test_modules(kernel, tmp_path / "out", lines.append)
    assert again == modules
    assert any("cached" in line for line in lines)


def test_manifest_round_trip(tmp_path: Path) -> None:
    entry = tmp_path / "e"
    built = m.ModuleSet(out_dir=entry, paths={m.P2P_MODULE: entry / "build" / "hil_p2p_importer.ko"},
                        features={"invalidate_mappings": True}, skipped={m.RDMA_MODULE: "no IB"},
                        cflags=("-DHIL_HAVE_INVALIDATE_MAPPINGS",))  # fmt: skip
    kernel = KernelImage(spec="src:debian-7.2", version="7.2.13-hil", image=tmp_path / "bzImage")
    data = m.manifest_dict(kernel, "k", built)
    assert data["modules"] == {m.P2P_MODULE: "build/hil_p2p_importer.ko"}  # relative: the entry can move
    assert m.module_set_from_manifest(entry, json.loads(json.dumps(data))) == built


def test_unprepared_tree_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_HIL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / ".config").write_text("CONFIG_MODULES=y\n")
    kernel = KernelImage(
        spec="tree:x", version="7.2.0", image=tmp_path / "bzImage", build_dir=tmp_path / "tree"
    )
    with pytest.raises(BuildError, match=r"missing Module\.symvers, scripts/mod/modpost"):
        m.build_test_modules(kernel, tmp_path / "out", lambda _line: None)
