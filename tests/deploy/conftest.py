"""Fixtures of the deployment tests; the services themselves are in `services.py`."""

from __future__ import annotations

import pytest

from tests.deploy.services import start_postgres


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the whole session (one database per server)."""
    pytest.importorskip("psycopg", reason="the postgres extra: pip install -e '.[postgres]'")
    yield from start_postgres()

