"""The reliability suite: real broker, real service processes, hostile conditions.

Marked ``reliability`` (and ``integration``); CI runs it with everything else. Each test prints
its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import source_topic, start_service

__all__ = ["source_topic", "start_service"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)
