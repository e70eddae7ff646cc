"""Fixtures shared by the suite; the classes behind them live in support.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from config import Settings, load_settings
from generation.models import ModelSpec, prepare_model
from generation.types import ModelUnavailable
from support import POSTGRES_URL, TestBot, make_bot, settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
async def testbot(settings: Settings) -> AsyncIterator[TestBot]:
    bot = await make_bot(settings)
    yield bot
    await bot.chorus.close()


@pytest.fixture(scope="session")
def embedded_spec() -> ModelSpec:
    """The real embedded model, in the same cache `make model` fills (converted there once if it is not yet).

    A missing model fails rather than skips: `make test` installs it, so its absence is a setup bug to see.
    """
    try:
        return prepare_model(load_settings(env={"CHORUS_HOME": os.environ.get("CHORUS_HOME", "")}))
    except ModelUnavailable as exc:
        pytest.fail(f"the embedded model is needed for slow tests: {exc}")


# -- Postgres: a database of this run's own, so that two runs at once (two checkouts, CI jobs) never meet ---------


def _libpq(url: URL) -> str:
    """A psycopg connection string for a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _admin(url: URL, *statements: str) -> None:
    import psycopg

    try:
        with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=5) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {url.render_as_string()} is unreachable ({exc}). Start it, point CHORUS_TEST_POSTGRES_URL "
            "at one, or deselect these tests with -m 'not postgres'.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database created for this test run (named after a random id) and dropped when the run ends."""
    server = make_url(POSTGRES_URL)
    name = f"chorus_test_{uuid.uuid4().hex[:12]}"
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """This run's database, emptied (every table, Chorus' and the libraries'), for one test."""
    _admin(make_url(postgres_database), "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return postgres_database
