"""A lab per test (unique directory, prefix and subnet), always torn down; see deploy.lab.testing."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from deploy.lab.state import LabState
from deploy.lab import testing
from deploy.lab.testing import lab_factory_fixture


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., LabState]]:
    yield from lab_factory_fixture(tmp_path)


@pytest.fixture
def lab_store() -> str:
    """The store profile the lab tests use; skips (saying why) when it cannot run here."""
    store = testing.default_store()
    reason = testing.skip_reason(store)
    if reason:
        pytest.skip(reason)
    return store
