"""Alembic's entry point: upgrade on the connection Chorus hands over, or (from the command line) on its own."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bots.migrations import FOREIGN_TABLES, schema_metadata
from bots.store import CleanJSON, CleanString, CleanText, UTCDateTime

config = context.config


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Revisions must not import the models (they change; a revision must not): our column types are plain DDL.
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, CleanString):
        return f"sa.String(length={getattr(obj.impl, 'length', None)})"
    if isinstance(obj, CleanText):
        return "sa.Text()"
    if isinstance(obj, CleanJSON):
        return "sa.JSON()"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema_metadata(),
        include_name=_include_name,
        render_item=_render_item,
        compare_type=True,
        # ALTER on SQLite means copy-and-rename; batch mode writes that for us and is a plain ALTER elsewhere.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


given: Connection | None = config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    asyncio.run(_run_with_own_engine(config.get_main_option("sqlalchemy.url") or ""))
