"""Fixtures of the harness's own tests: the patched emulator, served in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_moto  # noqa: E402


@pytest.fixture(scope="module")
def endpoint():
    """A fresh harness on a free loopback port, for one test module."""
    server = ferry_moto.start_server(0)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
