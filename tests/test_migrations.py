"""Schema migrations: a database made by the old create_all upgrades with its data, fresh databases get the newest
schema even when several processes start at once, and the models never drift from the revisions."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bots.events import Conversation, User
from bots.migrations import FOREIGN_TABLES, current_revision, head_revision, heads, schema_metadata
from bots.store import Store

ROOT = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).with_name("data")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# Tables that only appeared once their feature ran: a legacy database may lack them.
FEATURE_TABLES = ("drop_channels", "drop_runs", "drop_activity", "slack_events")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'chorus.db'}"


def _legacy_statements(dialect: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    ddl = (LEGACY / f"legacy_schema_{dialect}.sql").read_text()
    body = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    statements = [statement.strip() for statement in body.split(";") if statement.strip()]
    return [s for s in statements if not any(f" {table} " in f"{s} " or f" {table}(" in s for table in skip)]


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": lambda name, type_, parents: not (type_ == "table" and name in FOREIGN_TABLES),
        },
    )
    return list(compare_metadata(context, schema_metadata()))  # type: ignore[arg-type]


async def _differences_and_revision(store: Store) -> tuple[list[object], str | None]:
    async with store.engine.connect() as connection:
        differences = await connection.run_sync(_schema_differences)
        revision = await connection.run_sync(current_revision)
    return differences, revision


async def test_a_database_create_all_made_upgrades_in_place_and_keeps_its_data(database_url: str) -> None:
    engine = create_async_engine(database_url)
    dialect = engine.dialect.name
    async with engine.begin() as connection:
        # A deployment that never enabled drops or Slack: those tables do not exist yet.
        for statement in _legacy_statements(dialect, skip=FEATURE_TABLES):
            await connection.execute(text(statement))
        written = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        await connection.execute(
            text(
                "INSERT INTO generations (platform, workspace, channel, thread, user_id, user_name, kind, tone, prompt,"
                " instruction, variants, params, version, parent_id, root_id, status, message_ref, created_at)"
                " VALUES ('discord', 'g', 'general', NULL, 'u-old', 'Old Timer', 'poem', 'warm', 'tea at dawn', '',"
                " '[\"a cup\"]', '{}', 1, NULL, 1, 'ok', 'm-1', :written)"
            ),
            {"written": written},
        )
    await engine.dispose()

    upgraded = Store(database_url)
    await upgraded.start()
    try:
        old = await upgraded.find_by_message_ref("discord", "m-1")
        assert old is not None
        assert (old.user, old.prompt, old.variants, old.created_at) == (
            User("u-old", "Old Timer"),
            "tea at dawn",
            ("a cup",),
            written,
        )
        refined = await upgraded.add_generation(
            Conversation("discord", "g", "general"),
            User("u-new", "New"),
            kind="poem",
            tone="warm",
            prompt="tea at dawn",
            variants=["a mug"],
            params={},
            parent=old,
        )
        assert (refined.version, refined.root_id) == (2, old.id)
        differences, revision = await _differences_and_revision(upgraded)
        assert differences == []
        assert revision == head_revision()
    finally:
        await upgraded.close()


async def test_the_models_match_the_migrations(database_url: str) -> None:
    """A model change without a revision fails here: write one with `python -m bots.migrations revision -m ...`."""
    store = Store(database_url)
    await store.start()
    try:
        differences, revision = await _differences_and_revision(store)
    finally:
        await store.close()
    assert differences == [], f"the models differ from the migrations; add a revision: {differences}"
    assert revision == head_revision()


def test_the_revisions_have_one_head() -> None:
    """Two revisions written in parallel both chain after the same one; `python -m bots.migrations merge` joins them."""
    assert len(heads()) == 1, f"several heads {heads()}: run `python -m bots.migrations merge` and commit the result"


async def _start_in_a_process(url: str) -> tuple[int, str]:
    code = "import asyncio, sys; from bots.store import Store; s = Store(sys.argv[1]); asyncio.run(s.start())"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        url,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    return process.returncode or 0, stderr.decode(errors="replace")


@pytest.mark.postgres
async def test_three_processes_starting_at_once_on_a_fresh_postgres_database_all_succeed(postgres_url: str) -> None:
    results = await asyncio.gather(*(_start_in_a_process(postgres_url) for _ in range(3)))

    assert [(code, error.strip().splitlines()[-1:] if code else []) for code, error in results] == [(0, [])] * 3
    await _assert_at_head(postgres_url)


async def test_three_stores_starting_at_once_on_a_fresh_sqlite_file_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chorus.db'}"
    stores = [Store(url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.start() for store in stores))
    finally:
        for store in stores:
            await store.close()
    await _assert_at_head(url)


async def _assert_at_head(url: str) -> None:
    store = Store(url)
    await store.start()
    try:
        differences, revision = await _differences_and_revision(store)
    finally:
        await store.close()
    assert (differences, revision) == ([], head_revision())


def test_an_operator_upgrades_and_reads_the_revision_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bots.migrations.__main__ import main

    for key in [key for key in os.environ if key.startswith("CHORUS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path))
    newest = head_revision()

    assert main(["upgrade"]) == 0
    assert main(["current"]) == 0

    assert capsys.readouterr().out.splitlines() == [f"store at revision {newest} (newest: {newest})"] * 2
    assert (tmp_path / "chorus.db").is_file()


async def test_slack_reaction_names_stored_earlier_count_as_the_emoji_they_name(database_url: str) -> None:
    """Before the Slack adapter sent Unicode, engagement and feedback held Slack's names; after the upgrade the
    planner reads them as the emoji (a 👎 is -2, not an unknown reaction worth +1)."""
    from alembic import command

    from bots.migrations import alembic_config

    def to_previous(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "ed3526c70ca9")

    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(to_previous)
        for platform, value in [("slack", "-1"), ("slack", "--1"), ("slack", "heart"), ("slack", "-+1"),
                                ("slack", "partyparrot"), ("discord", "-1")]:  # fmt: skip
            await connection.execute(
                text(
                    "INSERT INTO engagement_events (platform, workspace, channel, user_id, kind, value, created_at)"
                    " VALUES (:platform, 'T1', 'C1', 'U1', 'reaction', :value, :now)"
                ),
                {"platform": platform, "value": value, "now": datetime.now(UTC)},
            )
    await engine.dispose()

    store = Store(database_url)
    await store.start()
    try:
        async with store.engine.connect() as connection:
            rows = await connection.execute(text("SELECT platform, value FROM engagement_events ORDER BY id"))
            assert [tuple(row) for row in rows] == [
                ("slack", "👎"), ("slack", "-👎"), ("slack", "❤"), ("slack", "-👍"),
                ("slack", "partyparrot"), ("discord", "-1"),
            ]  # fmt: skip
    finally:
        await store.close()
