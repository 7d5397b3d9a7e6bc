import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MRCNN_NP_NO_SKIPS=1 (set by .ci/run) a skipped test fails: in CI torch,
    torchvision and pycocotools are installed, so a skip means something is broken."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MRCNN_NP_NO_SKIPS") == "1" and report.skipped and not hasattr(
        report, "wasxfail"
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped, but MRCNN_NP_NO_SKIPS=1 forbids skips: {report.longrepr}"
