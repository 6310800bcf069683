"""Fixtures of the deployment tests; the services themselves are in `services.py`."""

from __future__ import annotations

import os

import pytest

from tests.deploy.services import start_postgres, sweep_through_restart


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the whole session (one database per server)."""
    pytest.importorskip("psycopg", reason="the postgres extra: pip install -e '.[postgres]'")
    yield from start_postgres()


@pytest.fixture(scope="session")
def sweep_on_server(tmp_path_factory, postgres):
    """A sweep run through a tracking-server restart, and that server, still up; see
    `services.sweep_through_restart`. Shared by the server, secret and UI tests."""
    secret = "s3cr3t-" + os.urandom(6).hex()
    yield from sweep_through_restart(postgres, tmp_path_factory.mktemp("served"), secret)
