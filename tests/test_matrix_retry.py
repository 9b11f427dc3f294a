"""`--retries`: which node ids a retry reruns (pure)."""

from __future__ import annotations

from harness.matrix.retry import to_retry
from harness.results.model import Outcome, TestRecord


def _rec(name: str, outcome: Outcome) -> TestRecord:
    return TestRecord(name=name, outcome=outcome, duration=0.1)


def test_failed_tests_rerun_by_node_id_and_selftests_through_their_binarys_wrapper() -> None:
    records = [
        _rec("test_export.py::test_whole_bar", "passed"),
        _rec("test_routing.py::test_x[exporter-dma]", "failed"),
        _rec("test_routing.py::test_y", "error"),
        _rec("kselftest/iommu/iommufd/iommufd_ioas.no_domain.area_auto_iova", "failed"),
        _rec("kselftest/iommu/iommufd/iommufd_ioas.mock_domain.area_auto_iova", "failed"),
        _rec("kselftest/iommu/iommufd_fail_nth", "error"),
        _rec("kselftest/iommu/iommufd_fail_nth/basic", "passed"),
        _rec("kselftest/vfio/build", "failed"),
    ]
    assert to_retry(records) == (
        "test_routing.py::test_x[exporter-dma]",
        "test_routing.py::test_y",
        "test_kselftest.py::test_kselftest[iommu/iommufd]",
        "test_kselftest.py::test_kselftest[iommu/iommufd_fail_nth]",
    )
