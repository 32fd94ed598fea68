"""End-to-end tests: Ferry's release binaries driven through the local sandbox.

tests/run builds the binaries and sets FERRY_BIN_DIR; to run these alone:

    source tests/lib.sh && ferry_python_env && ferry_release_binaries && python -m pytest tests/e2e -q
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "sandbox"))
import ferry_sandbox  # noqa: E402


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    bin_dir = os.environ.get("FERRY_BIN_DIR")
    if not bin_dir:
        pytest.fail("FERRY_BIN_DIR is not set: tests/run builds the release binaries and sets it")
    sb = ferry_sandbox.Sandbox(Path(bin_dir), tmp_path_factory.mktemp("sandbox"))
    yield sb
    sb.close()


@pytest.fixture
def world(sandbox, request):
    """The sandbox, loaded by the test; afterwards, nothing may be left undelivered."""
    yield sandbox
    if not hasattr(request.node, "rep_call") or request.node.rep_call.passed:
        assert not sandbox.dead_letters(), f"events ended in a dead-letter queue: {sandbox.dead_letters()}"
    sandbox.stop_functions()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def example(model: str) -> str:
    return (REPO / "examples" / "github-actions" / f"ferry-{model}.toml").read_text()
