"""Fixtures several test modules import (conftest.py already has a session-wide ``collector``).

A module that needs a collector of its own for each test, because its tests
change the collector's mode or stop it, imports this one::

    from _helpers import collector_per_test  # noqa: F401 - the fixture "collector"
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from collector import RecordingCollector


@pytest.fixture(name="collector")
def collector_per_test() -> Iterator[RecordingCollector]:
    """A fresh recording collector on 127.0.0.1 for one test, stopped afterwards."""
    server = RecordingCollector().start()
    yield server
    server.stop()
