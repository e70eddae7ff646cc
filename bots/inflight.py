"""Generations in flight survive a kill: after a restart, no message is left saying "thinking…" or half-written.

A clean stop (SIGTERM) finishes every message itself (bots/shutdown.py); a process that is killed (SIGKILL, out of
memory) cannot. So the studio records each generation whose message is on the platform in the store, with its
owner, this process' instance id, and deletes the record once the message is final. The owner's heartbeat keeps the
records' `updated_at` fresh; a killed process' records go stale. Every process sweeps at start and at every
heartbeat: it claims each stale record of its platform (one compare-and-set, so several processes sharing a Postgres
database finish a message once, and a live process' records are never touched) and edits the old message into the
result when that was stored before the kill, or else into a short note that says what to do again. A record whose
owner ran on this host under a process id that no longer exists is taken at once, without waiting for it to go stale:
the usual restart of a killed process finishes its messages as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from bots.events import Action, Command, Conversation
from bots.redelivery import claim, release, reply_for
from bots.reply import Publisher, PublishForbidden, Reply
from bots.store import InFlightGeneration

if TYPE_CHECKING:
    from bots.app import Chorus
    from bots.router import Context
    from bots.store import Store

_log = logging.getLogger(__name__)

# How often a process stamps its records as alive, and how long unstamped records wait before another process takes
# them for a dead one's: several missed beats, so a busy event loop or a slow database never looks like a death.
HEARTBEAT_S = 15.0
STALE_S = 60.0
# Records older than this are dropped unfinished if their message still cannot be edited.
GIVE_UP = timedelta(days=1)


def restart_note(retry: str) -> str:
    """What a message cut short by a kill says after the restart."""
    return f"⚠ Chorus restarted before this finished — {retry} again."


def retry_hint(ctx: Context) -> str:
    """What the user did, as the note tells them to do it again: "run /create", "press the button"."""
    event = ctx.event
    if isinstance(event, Command):
        return f"run /{event.name}"
    if isinstance(event, Action):
        return "press the button"
    return "send your message"


def _now() -> datetime:
    return datetime.now(UTC)


def new_owner() -> str:
    """`host/pid/random`: unique to this process' life, and telling which process on which host it was."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{uuid.uuid4().hex[:16]}"


def dead_on_this_host(owner: str) -> bool:
    """Was `owner` a process on this host that has exited? False when unsure (another host, a live pid)."""
    host, _, rest = owner.partition("/")
    pid, _, _ = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, under another user
        return False
    return False


class Watch:
    """One generation's record: written when its message is posted, marked when its result is stored, deleted when
    the message is final. Store failures are logged, never raised: a generation does not fail over its record."""

    def __init__(self, in_flight: InFlight, conversation: Conversation, user_id: str, retry: str, title: str) -> None:
        self.in_flight = in_flight
        self.conversation = conversation
        self.user_id = user_id
        self.retry = retry
        self.title = title
        self.row_id: int | None = None
        self.generation_id: int | None = None
        self._writes: asyncio.Task[None] | None = None
        self._closed = False

    def posted(self, message_ref: str) -> None:
        """The stream's message is on the platform (called from the adapter, which must not wait for the store)."""
        if self._closed:
            return  # the message is final already
        previous = self._writes

        async def write() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await self._save(message_ref)

        self._writes = asyncio.ensure_future(write())

    async def _save(self, message_ref: str) -> None:
        store, now = self.in_flight.store, _now()
        try:
            async with store.session() as session, session.begin():
                if self.row_id is None:
                    row = InFlightGeneration(
                        platform=self.conversation.platform,
                        workspace=self.conversation.workspace,
                        channel=self.conversation.channel,
                        thread=self.conversation.thread,
                        message_ref=message_ref,
                        user_id=self.user_id,
                        command=self.retry,
                        title=self.title,
                        generation_id=self.generation_id,
                        owner=self.in_flight.instance,
                        started_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                    await session.flush()
                    self.row_id = row.id
                    self.in_flight.live.add(row.id)
                else:
                    await session.execute(
                        update(InFlightGeneration)
                        .where(InFlightGeneration.id == self.row_id)
                        .values(message_ref=message_ref, updated_at=now)
                    )
        except SQLAlchemyError:
            _log.exception("could not record a generation in flight in %s", self.conversation.key)

    async def _settled(self) -> None:
        if self._writes is not None:
            with contextlib.suppress(Exception):
                await self._writes

    async def stored(self, generation_id: int) -> None:
        """The result is stored: a restart from here on shows it in the message instead of the note."""
        self.generation_id = generation_id
        await self._settled()
        if self.row_id is None:
            return  # nothing posted yet: a result stored but never shown is redelivered (bots/redelivery.py)
        try:
            async with self.in_flight.store.session() as session, session.begin():
                await session.execute(
                    update(InFlightGeneration)
                    .where(InFlightGeneration.id == self.row_id)
                    .values(generation_id=generation_id, updated_at=_now())
                )
        except SQLAlchemyError:
            _log.exception("could not mark generation %s as stored while in flight", generation_id)

    async def close(self) -> None:
        """The message is final (delivered, failed with a message, or aborted): nothing is left to finish."""
        self._closed = True
        await self._settled()
        if self.row_id is None:
            return
        self.in_flight.live.discard(self.row_id)
        try:
            async with self.in_flight.store.session() as session, session.begin():
                await session.execute(delete(InFlightGeneration).where(InFlightGeneration.id == self.row_id))
        except SQLAlchemyError:
            # Left to the heartbeat: a record outliving its final message would have a later process overwrite it.
            _log.exception("could not clear a generation in flight in %s; trying again", self.conversation.key)
            self.in_flight.finished.add(self.row_id)
        self.row_id = None


class InFlight:
    """This process' generations in flight, its heartbeat, and the sweep that finishes a dead process' messages."""

    def __init__(self, store: Store, *, heartbeat_s: float | None = None, stale_s: float | None = None) -> None:
        self.store = store
        self.instance = new_owner()
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_s = STALE_S if stale_s is None else stale_s
        self.publisher: Publisher | None = None
        self.platform = ""
        self._task: asyncio.Task[None] | None = None
        # This process' records, and those of final messages whose deletion failed (the heartbeat deletes them).
        self.live: set[int] = set()
        self.finished: set[int] = set()

    @classmethod
    def attach(cls, chorus: Chorus) -> InFlight:
        in_flight = cls(chorus.store)
        chorus.on_close(in_flight.stop)
        return in_flight

    def watch(self, ctx: Context, title: str) -> Watch:
        event = ctx.event
        return Watch(self, event.conversation, event.user.id, retry_hint(ctx), title)

    def start(self, publisher: Publisher, platform: str) -> None:
        """Called by an adapter once it can post: finish what dead processes left on `platform`, now and at every
        heartbeat, and keep this process' own records alive."""
        self.publisher, self.platform = publisher, platform
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="chorus-in-flight")

    @property
    def running(self) -> bool:
        """The heartbeat and sweep are running (start() was called and stop() not since)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                await self.sweep()
            except SQLAlchemyError as exc:
                _log.warning(
                    "checking generations in flight failed (%s); trying again in %.0f s", exc, self.heartbeat_s
                )
            except Exception:
                _log.exception("checking generations in flight failed")
            await asyncio.sleep(self.heartbeat_s)

    async def beat(self) -> None:
        """Stamp this process' records as alive (first deleting those of messages already final). Nothing is written
        while none is in flight: on SQLite every write competes with the drops scheduler's for the one write lock."""
        if not self.live and not self.finished:
            return
        done = set(self.finished)
        async with self.store.session() as session, session.begin():
            if done:
                await session.execute(delete(InFlightGeneration).where(InFlightGeneration.id.in_(done)))
            await session.execute(
                update(InFlightGeneration).where(InFlightGeneration.owner == self.instance).values(updated_at=_now())
            )
        self.finished -= done

    async def sweep(self) -> int:
        """Finish the messages of this platform's records whose owner is dead (gone from this host, or silent for
        `stale_s`); returns how many were finished."""
        if self.publisher is None:
            return 0
        cutoff = _now() - timedelta(seconds=self.stale_s)
        async with self.store.session() as session:
            rows = list(
                await session.scalars(
                    select(InFlightGeneration)
                    .where(InFlightGeneration.platform == self.platform, InFlightGeneration.owner != self.instance)
                    .order_by(InFlightGeneration.id)
                )
            )
        dead = {row.owner for row in rows if dead_on_this_host(row.owner)}
        finished = 0
        for row in rows:
            if row.updated_at >= cutoff and row.owner not in dead:
                continue  # its owner may be alive: its heartbeat keeps the record fresh
            if not await self._claim(row, None if row.owner in dead else cutoff):
                continue  # another process took it, or its owner is alive after all
            try:
                done = await self._finish(row)
            except asyncio.CancelledError:
                await self._unclaim(row)
                raise
            if done or row.started_at < _now() - GIVE_UP:
                await self._drop(row)
                finished += done
            else:
                await self._unclaim(row)
        if finished:
            _log.info("finished %d message(s) a stopped Chorus left in flight", finished)
        return finished

    async def _claim(self, row: InFlightGeneration, cutoff: datetime | None) -> bool:
        """Take the record from its dead owner, unless another took it first or (with `cutoff`) it was stamped."""
        conditions = [InFlightGeneration.id == row.id, InFlightGeneration.owner == row.owner]
        if cutoff is not None:
            conditions.append(InFlightGeneration.updated_at < cutoff)
        async with self.store.session() as session, session.begin():
            result = await session.execute(
                update(InFlightGeneration).where(*conditions).values(owner=self.instance, updated_at=_now())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _unclaim(self, row: InFlightGeneration) -> None:
        """Leave it for a later sweep (by anyone): ownerless, it goes stale again."""
        async with self.store.session() as session, session.begin():
            await session.execute(
                update(InFlightGeneration)
                .where(InFlightGeneration.id == row.id, InFlightGeneration.owner == self.instance)
                .values(owner="")
            )

    async def _drop(self, row: InFlightGeneration) -> None:
        async with self.store.session() as session, session.begin():
            await session.execute(delete(InFlightGeneration).where(InFlightGeneration.id == row.id))

    async def _finish(self, row: InFlightGeneration) -> bool:
        """Edit the message into the stored result, or into the restart note; False to try again later."""
        assert self.publisher is not None
        conversation = Conversation(row.platform, row.workspace, row.channel, row.thread)
        try:
            if row.generation_id is not None:
                record = await self.store.get_generation(row.generation_id)
                if record is not None:
                    return await self._show_result(row, conversation, record.id)
            note = Reply(parts=(restart_note(row.command),), title=row.title)
            if not await self.publisher.edit(conversation, row.message_ref, note):
                _log.info("the message %s left in flight is gone; nothing to finish", row.message_ref)
            return True
        except PublishForbidden as exc:
            _log.warning("cannot finish the message %s left in flight: %s", row.message_ref, exc)
            return True
        except Exception:
            _log.exception("finishing the message %s left in flight failed; trying again later", row.message_ref)
            return False

    async def _show_result(self, row: InFlightGeneration, conversation: Conversation, generation_id: int) -> bool:
        """The result was stored before the kill: it replaces the half-written message (or, when that message is
        gone, is posted anew), once, whoever else is redelivering results."""
        assert self.publisher is not None
        if not await claim(self.store, generation_id):
            # Delivered before the kill (only the record's deletion was lost), or being delivered by someone else.
            return True
        record = await self.store.get_generation(generation_id)
        if record is None:
            return True
        try:
            reply = reply_for(record)
            if await self.publisher.edit(conversation, row.message_ref, reply):
                message_ref = row.message_ref
            else:
                message_ref = await self.publisher.publish(conversation, reply)
        except PublishForbidden:
            raise  # stays claimed: not retried at every sweep
        except BaseException:
            await release(self.store, generation_id)
            raise
        await self.store.set_message_ref(generation_id, message_ref)
        return True
