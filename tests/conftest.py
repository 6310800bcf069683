"""Shared fixtures: one token cache per test session, and a helper to compose small configs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """Every test shares one token/GEMM cache, kept away from the user's home."""
    path = tmp_path_factory.mktemp("proxysweep-cache")
    old = os.environ.get("PROXYSWEEP_CACHE")
    os.environ["PROXYSWEEP_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PROXYSWEEP_CACHE", None)
    else:
        os.environ["PROXYSWEEP_CACHE"] = old
