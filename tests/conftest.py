"""Shared fixtures: paths to configs and small validated experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    return CONFIGS / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny(tiny_path):
    from engraft import load_config

    return load_config(tiny_path)
