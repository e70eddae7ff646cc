"""What every part of the drops service shares: its state, the store helpers for channels and runs, the channel's
planner, kinds and topics, and the admin alert. The parts are mixins over `DropsCore`; `DropsService` joins them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bots.errors import UserError
from bots.events import Conversation, User
from bots.reply import Publisher, Reply
from config import KindSpec
from scheduler.leader import Leadership
from scheduler.models import GENERATING, DropChannel, DropRun
from scheduler.planner import SHARED_PRIOR_MIN_DROPS, Planner, SharedPrior
from scheduler.schedule import Schedule, build_schedule

if TYPE_CHECKING:
    from bots.app import Chorus


_log = logging.getLogger(__name__)

# How long the deployment's shared prior is reused before every channel's planner is read again.
SHARED_PRIOR_REFRESH = timedelta(minutes=10)
DROPS_USER = User("chorus-drops", "Chorus drops")


KIND_LABELS = {"prompt": "Writing prompt", "idea": "Idea of the day", "story": "Micro-story", "question": "Question"}


def conversation_of(row: DropChannel) -> Conversation:
    return Conversation(row.platform, row.workspace, row.channel, row.thread)


def schedule_of(row: DropChannel) -> Schedule:
    """The channel's saved schedule. One that no longer works (a zone this system stopped knowing) says so, and how
    to set it again, instead of asking for an option nobody typed."""
    try:
        return build_schedule(row.cadence, row.time, row.tz, row.quiet)
    except UserError as exc:
        raise UserError(
            f"This channel's saved schedule no longer works: {exc} Set it again with /drops enable "
            "(e.g. /drops enable --tz Europe/Berlin)."
        ) from None


def settings_version(row: DropChannel) -> str:
    """Which settings a job was scheduled from; reconcile re-schedules a job whose version is stale."""
    return row.updated_at.isoformat() if row.updated_at else ""


class DropsCore:
    """The drops service's shared state and helpers. `clock` is injectable so tests can freeze or jump time: then
    APScheduler, which only knows the wall clock, keeps the jobs (and their next run times) but never fires them; the
    clock's owner fires slots with `run_slot`."""

    def __init__(self, chorus: Chorus, *, name: str = "chorus", clock: Callable[[], datetime] | None = None) -> None:
        self.chorus = chorus
        self.settings = chorus.settings.drops
        self.store = chorus.store
        self.name = name
        self.clock = clock or (lambda: datetime.now(UTC))
        self.fires_on_wall_clock = clock is None
        self.publisher: Publisher | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.job_store: SQLAlchemyJobStore | None = None
        self.leadership: Leadership | None = None
        self._activity: Counter[tuple[str, str, str, int]] = Counter()
        self._mined: dict[str, Counter[str]] = {}
        # Channels that opted in to topic learning (_load_learning; kept by /drops topics learn):
        # only their messages' words are counted, even in memory.
        self._learning: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._tick_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._tables_ready = False
        self._started = False
        self._pruned_at: datetime | None = None
        # Runs that reached the channel but whose "posted" could not be stored yet (a locked database): run id ->
        # (generation id, values to store). The tick stores them; a restart before that shows them unconfirmed.
        self._unrecorded: dict[int, tuple[int | None, dict[str, Any]]] = {}
        # Channels whose due retries are being sent (by the tick, possibly still after it returned), and how long a
        # tick waits for them (None: `tick_s`) before it goes on with engagement and schedules.
        self._retrying_channels: set[str] = set()
        self.retry_wait_s: float | None = None
        # Why the last alert could not reach the admin channel, per platform ("" once one got through): shown in
        # /drops status, so a misconfigured admin channel is not noticed only in the log.
        self._alert_failures: dict[str, str] = {}
        # Channels whose slot fired while the database could not be used: key -> when it fired. The tick retries.
        self._slots_to_retry: dict[str, datetime] = {}
        self._lock = asyncio.Lock()
        self._planner_locks: dict[str, asyncio.Lock] = {}
        # Channels whose job could not be made, with the settings version the admin channel was told about (once).
        self._unschedulable: dict[str, str] = {}
        # What each channel with enough drops tells the deployment's shared prior, read from every planner at most
        # once per SHARED_PRIOR_REFRESH (with thousands of channels, reading them all at every slot was the cost).
        self._shared_looks: dict[str, dict[str, tuple[float, float]]] = {}
        self._shared_read_at: datetime | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def now(self) -> datetime:
        return self.clock()

    def _planner_lock(self, key: str) -> asyncio.Lock:
        """Held while this process reads a channel's planner, changes it and saves it back, so a drop being chosen
        and an engagement being learned never overwrite each other's update."""
        return self._planner_locks.setdefault(key, asyncio.Lock())

    async def ensure_tables(self) -> None:
        """The drops tables come with the store's schema revisions (bots/migrations), made when the store starts."""
        self._tables_ready = True
        await self._load_learning()

    async def _load_learning(self) -> None:
        """Which channels opted in to topic learning: at start (every process counts words, not only the leader)
        and at each activity flush (another process may have changed it)."""
        async with self.store.session() as session:
            learning = await session.execute(select(DropChannel.key).where(DropChannel.learn_topics.is_(True)))
            self._learning = set(learning.scalars())

    async def _channel(self, key: str) -> DropChannel | None:
        async with self.store.session() as session:
            return await session.scalar(select(DropChannel).where(DropChannel.key == key))

    async def _save_channel(self, key: str, **values: Any) -> None:
        async with self.store.session() as session, session.begin():
            await session.execute(update(DropChannel).where(DropChannel.key == key).values(**values))

    async def _run(self, run_id: int) -> DropRun | None:
        async with self.store.session() as session:
            return await session.get(DropRun, run_id)

    async def _set_run(self, run_id: int, **values: Any) -> None:
        async with self.store.session() as session, session.begin():
            await session.execute(update(DropRun).where(DropRun.id == run_id).values(**values))

    async def _claim(
        self, row: DropChannel, run_key: str, slot: datetime, status: str = GENERATING, note: str = ""
    ) -> int | None:
        """Insert the run for this slot; None when it already exists (another process or an earlier start)."""
        try:
            async with self.store.session() as session, session.begin():
                run = DropRun(
                    run_key=run_key,
                    channel_key=row.key,
                    platform=row.platform,
                    scheduled_for=slot,
                    status=status,
                    note=note,
                    created_at=self.now(),
                )
                session.add(run)
                await session.flush()
                return run.id
        except IntegrityError:
            return None

    def _auto_hour(self, row: DropChannel) -> int:
        """The local hour a `--time auto` drop fires at: the planner's pick, or the default before its first."""
        return row.auto_hour if row.auto_hour is not None else self.settings.default_hour

    def _job_id(self, key: str) -> str:
        return f"drop:{key}"

    async def _planner(self, row: DropChannel, schedule: Schedule) -> Planner:
        """The channel's planner with the current options and activity counts (in the channel's zone)."""
        planner = self._stored_planner(row)
        planner.set_options(self._kinds(row), self.chorus.settings.tones, self._topics(row))
        planner.fixed_hour = schedule.fixed_hour
        planner.quiet = schedule.quiet
        planner.activity = await self.activity_matrix(conversation_of(row), schedule.tz)
        planner.adopt_prior(await self._shared_prior(row.key))
        return planner

    async def _shared_prior(self, key: str) -> SharedPrior:
        """What the deployment's other channels learned about each kind, tone and topic (empty with fewer than two
        of them): a channel starts from there instead of from nothing. The channels' planners are read again once
        SHARED_PRIOR_REFRESH has passed: they change by a drop a day, so a prior minutes old is as good."""
        now = self.now()
        read_at = self._shared_read_at
        if read_at is None or not read_at <= now < read_at + SHARED_PRIOR_REFRESH:
            async with self.store.session() as session:
                rows = list(await session.execute(select(DropChannel.key, DropChannel.planner)))
            looks = {}
            for channel, state in rows:
                try:
                    planner = Planner.from_state(state)
                except (KeyError, TypeError, ValueError, IndexError):
                    continue  # a damaged row teaches nothing; the channel itself starts afresh when it next plans
                if planner.observed >= SHARED_PRIOR_MIN_DROPS:
                    looks[channel] = SharedPrior.looks(planner)
            self._shared_looks, self._shared_read_at = looks, now
        return SharedPrior.from_looks([seen for channel, seen in self._shared_looks.items() if channel != key])

    def _stored_planner(self, row: DropChannel) -> Planner:
        """The channel's saved planner; one that cannot be read (a damaged row) starts afresh instead of failing
        every drop of the channel."""
        try:
            return Planner.from_state(row.planner)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            _log.warning("the planner saved for %s could not be read (%r); learning afresh", row.key, exc)
            return Planner(
                self._kinds(row) or list(row.kinds),
                self.chorus.settings.tones,
                self._topics(row),
                seed=zlib.crc32(row.key.encode()),
                default_hour=self.settings.default_hour,
            )

    def _all_kinds(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.kinds, *self.chorus.settings.kinds]))

    def _kinds(self, row: DropChannel) -> list[str]:
        """The channel's kinds that are still configured (a kind removed from the config falls away)."""
        known = set(self._all_kinds())
        return [kind for kind in row.kinds if kind in known]

    def _topics(self, row: DropChannel) -> list[str]:
        topics = list(row.topics) or list(self.settings.topics)
        if row.learn_topics and row.mined:
            mined = sorted(row.mined.items(), key=lambda item: -item[1])
            topics += [word for word, weight in mined[:3] if weight >= 3 and word not in topics]
        return topics

    def _no_kinds_note(self, row: DropChannel) -> str:
        return (
            f"none of this channel's kinds ({', '.join(row.kinds)}) is configured any more; "
            "choose others with /drops enable --kinds"
        )

    def _spec(self, kind: str) -> KindSpec:
        drop_kind = self.settings.kinds.get(kind)
        if drop_kind is not None:
            return KindSpec(**drop_kind.model_dump())
        spec = self.chorus.settings.kinds.get(kind)
        if spec is None:
            raise UserError(f"The drop kind {kind!r} is no longer configured.")
        return spec

    async def alert(self, row: DropChannel, text: str) -> None:
        """Tell the configured admin channel; without one (or if that fails too) the log has it."""
        admin = self.settings.admin_channel
        if not admin or self.publisher is None:
            _log.warning("drops alert (no admin channel configured): %s", text)
            return
        try:
            await self.publisher.publish(Conversation(row.platform, row.workspace, admin), Reply.text(f"⚠ {text}"))
        except Exception as exc:
            # ValueError: an id the platform cannot read (a Slack id given to Discord, say).
            reason = "not a channel id here" if isinstance(exc, ValueError) else (str(exc) or type(exc).__name__)
            self._alert_failures[row.platform] = f"could not reach drops.admin_channel {admin} ({reason})"
            _log.warning("drops alert could not reach the admin channel %s (%s): %s", admin, exc, text)
        else:
            self._alert_failures.pop(row.platform, None)

    @staticmethod
    def _fmt(at: datetime, schedule: Schedule) -> str:
        return at.astimezone(schedule.zone).strftime("%a %Y-%m-%d %H:%M %Z")

    async def _require(self, conversation: Conversation) -> DropChannel:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        if row is None or not row.enabled:
            raise UserError("Drops are not enabled here. Start them with /drops enable (see /help).")
        return row

    def _stats_dir(self) -> Path:
        return Path(self.chorus.settings.home_dir) / "stats"

    # -- provided by the other parts of the service (see scheduler/service.py) -----------------------------------

    async def settle_due(self, channel_key: str | None = None, *, ahead: timedelta = timedelta(0)) -> int:
        raise NotImplementedError

    async def deliver(self, run_id: int) -> DropRun:
        raise NotImplementedError

    async def next_run(self, row: DropChannel) -> datetime | None:
        raise NotImplementedError

    async def flush_activity(self) -> None:
        raise NotImplementedError

    async def activity_matrix(self, conversation: Conversation, tz: str) -> Any:
        raise NotImplementedError

    async def _sync_job(self, row: DropChannel, *, after_slot: datetime | None = None) -> None:
        raise NotImplementedError
