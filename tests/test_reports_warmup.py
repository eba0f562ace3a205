"""Report workers of a DICOM-writing run read highdicom's standard tables before the first study
is due (``reports.warmup``), so a one-study run does not wait for them after scoring."""

from __future__ import annotations

import pytest

from monai_fracture.scoring.processes import report_pool


def _tables_loaded() -> bool:
    from highdicom._standard_utils import get_module_attribute_map

    return get_module_attribute_map.cache_info().currsize == 1


@pytest.mark.parametrize("warm", [True, False])
def test_a_warm_pool_has_the_tables_before_its_first_study(warm):
    from highdicom._standard_utils import get_module_attribute_map

    get_module_attribute_map.cache_clear()  # forked workers must not inherit this process's tables
    pool = report_pool(1, warm=warm)
    try:
        # one worker runs jobs in order: the warm-up (if any) has finished when this one runs
        assert pool.submit(_tables_loaded).result(timeout=120) is warm
    finally:
        pool.shutdown()
