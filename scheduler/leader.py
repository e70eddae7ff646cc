"""One scheduler per deployment: a Postgres session advisory lock elects the leader among bot processes.

The lock lives as long as the leader's database connection, so a leader that dies (or loses the database) lets
another process take over at its next try, `poll_s` later. SQLite deployments are one process: always leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    """Runs `on_gain` when this process becomes leader and `on_loss` when it stops being one."""

    def __init__(
        self, engine: AsyncEngine, on_gain: Hook, on_loss: Hook, *, name: str = "chorus-drops", poll_s: float = 15.0
    ) -> None:
        self.engine = engine
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.key = lock_key(name)
        self.poll_s = poll_s
        self.is_leader = False
        self.attempts = 0
        self._connection: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def uses_lock(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        if not self.uses_lock:
            self.is_leader = True
            await self.on_gain()
            return
        self._task = asyncio.create_task(self._loop(), name="drops-leadership")

    async def _try_acquire(self) -> bool:
        connection = await self.engine.connect()
        try:
            got = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
            # Autobegun transaction: end it so the session lock is all this connection holds.
            await connection.commit()
        except Exception:
            await connection.close()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def _alive(self) -> bool:
        assert self._connection is not None
        try:
            await self._connection.scalar(text("SELECT 1"))
            await self._connection.commit()
            return True
        except Exception as exc:
            _log.warning("drops leader lost its database connection: %s", exc)
            return False

    async def _loop(self) -> None:
        while True:
            try:
                if not self.is_leader:
                    self.attempts += 1
                    if await self._try_acquire():
                        self.is_leader = True
                        _log.info("this process now runs the drops scheduler (advisory lock %s)", self.key)
                        try:
                            await self.on_gain()
                        except Exception:
                            _log.exception("starting the drops scheduler failed; letting another process lead")
                            await self._step_down()
                elif not await self._alive():
                    await self._step_down()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("drops leadership check failed; retrying in %.0f s", self.poll_s)
            await asyncio.sleep(self.poll_s)

    async def _step_down(self) -> None:
        self.is_leader = False
        try:
            await self.on_loss()
        finally:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.close()
            self._connection = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_leader:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            await self._step_down()
