"""Fixtures shared by the unit tests of the local stack's services."""

from dataclasses import replace
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack.service import StackPaths


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings with the stack's runtime and download folders under ``tmp_path``."""
    return replace(Settings.from_env({}), stack_dir=tmp_path / "stack", cache_dir=tmp_path / "cache")


@pytest.fixture
def paths(settings: Settings) -> StackPaths:
    """The stack folders of :func:`settings`."""
    return StackPaths.from_settings(settings)
