"""The drops service: APScheduler (SQLAlchemyJobStore on the store's database) plus the planner, per channel.

Each scheduled slot is one `DropRun` with a unique key. It is recorded as "posting" before the send and "posted"
with the platform message id after, so a crash mid-send is resolved at the next start without a second post.
Failed sends retry with backoff and then alert the admin channel; a channel Chorus can no longer post to is paused.
Only the leader (a Postgres advisory lock; always the one process on SQLite) runs the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from bots.drops import DropsOptions, StateChange, StatsImage
from bots.errors import UserError
from bots.events import Action, Activity, Command, Conversation, Message, User
from bots.parsing import did_you_mean
from bots.reply import Publisher, PublishForbidden, Reply, ReplyAction
from bots.router import Context, Handler
from bots.store import EngagementEvent
from bots.studio import Draft
from config import KindSpec
from generation.prompts import render_template
from generation.types import GenerationError, Priority
from scheduler import jobs
from scheduler.leader import Leadership
from scheduler.models import (
    FAILED,
    FINAL,
    GENERATING,
    MISSED,
    POSTED,
    POSTING,
    RETRYING,
    SKIPPED,
    UNCONFIRMED,
    DropActivity,
    DropChannel,
    DropRun,
)
from scheduler.planner import DropPlan, Engagement, Planner, engagement_reward, quiet_hours, too_similar
from scheduler.retention import Pruned, prune_rows, prune_stats_images
from scheduler.schedule import CADENCES, Schedule, build_schedule, fire_times, slot_wall_time

if TYPE_CHECKING:
    from bots.app import Chorus

_log = logging.getLogger(__name__)

DROPS_USER = User("chorus-drops", "Chorus drops")
RATE_UP, RATE_DOWN = "rate_up", "rate_down"
KIND_LABELS = {"prompt": "Writing prompt", "idea": "Idea of the day", "story": "Micro-story", "question": "Question"}
_WORD = re.compile(r"[a-zà-ÿ]{5,}")
_STOPWORD_TEXT = (
    "about above after again against because before being below between could doing during every further "
    "having their there these those through under until which while would yours yourself really think thing "
    "things people still right going gonna wanna maybe might should where thanks today tomorrow yesterday "
    "other another something anything nothing everyone someone great little never always since"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WEEK0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: hour_of_week 0
# Slack reports reactions by name, Discord by the emoji itself; the weights are keyed by emoji, so count both alike.
_REACTION_ALIASES = {
    "+1": "👍",
    "thumbsup": "👍",
    "-1": "👎",
    "thumbsdown": "👎",
    "heart": "❤️",
    "fire": "🔥",
    "joy": "😂",
    "tada": "🎉",
}


def sync_url(async_url: str) -> str:
    """The store's async URL as the sync URL APScheduler's SQLAlchemyJobStore needs (same database)."""
    url = make_url(async_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("drops need a file or server database; an in-memory SQLite store cannot be shared")
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url.set(drivername=backend).render_as_string(hide_password=False)


def _unavailable(exc: BaseException) -> bool:
    """Does this publish failure mean "you may not post here" (not a passing outage)? The adapters map their
    platform's refusals (403, not_in_channel, archived…) to PublishForbidden; everything else is retried."""
    return isinstance(exc, PublishForbidden)


def _conversation(row: DropChannel) -> Conversation:
    return Conversation(row.platform, row.workspace, row.channel, row.thread)


def _schedule(row: DropChannel) -> Schedule:
    return build_schedule(row.cadence, row.time, row.tz, row.quiet)


def _version(row: DropChannel) -> str:
    """Which settings a job was scheduled from; reconcile re-schedules a job whose version is stale."""
    return row.updated_at.isoformat() if row.updated_at else ""


class _RunUnusable(Exception):
    """A run that cannot proceed as stored and cannot be repaired (its channel has no configured kind left)."""


class _Capture:
    """A Responder for the studio that keeps the drop's text instead of showing it; the service posts it."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []

    async def defer(self) -> None:
        return None

    async def send(self, reply: Reply) -> str:
        self.replies.append(reply)
        return ""

    async def edit(self, message_ref: str, reply: Reply) -> None:
        return None

    def stream(self, title: str) -> _Capture:
        return self

    async def begin_part(self, index: int, total: int) -> None:
        return None

    async def write(self, delta: str) -> None:
        return None

    async def status(self, text: str) -> None:
        return None

    async def finish(self, reply: Reply) -> str:
        self.replies.append(reply)
        return ""

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, _Capture]:
        return message_ref, self


class DropsService:
    """Implements bots.drops.DropsControl. `clock` is injectable so tests can freeze or jump time."""

    def __init__(self, chorus: Chorus, *, name: str = "chorus", clock: Callable[[], datetime] | None = None) -> None:
        self.chorus = chorus
        self.settings = chorus.settings.drops
        self.store = chorus.store
        self.name = name
        self.clock = clock or (lambda: datetime.now(UTC))
        self.publisher: Publisher | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.leadership: Leadership | None = None
        self._activity: Counter[tuple[str, str, str, int]] = Counter()
        self._mined: dict[str, Counter[str]] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._tables_ready = False
        self._started = False
        self._pruned_at: datetime | None = None
        self._lock = asyncio.Lock()

    # -- wiring --------------------------------------------------------------------------------------------------

    def attach(self) -> None:
        """Install this service on its Chorus as the drops plug-in (tests inject a clock this way)."""
        from scheduler.plugin import DropsPlugin

        self.chorus.install(DropsPlugin(self))

    async def ensure_tables(self) -> None:
        """The drops tables come with the store's schema revisions (bots/migrations), made when the store starts."""
        self._tables_ready = True

    async def start(self, publisher: Publisher) -> None:
        """Called once the adapter can post: take part in leader election; the leader runs the scheduler."""
        self.publisher = publisher
        if self._started:  # called again (a reconnect, a hook registered twice): one scheduler, the newest publisher
            return
        self._started = True
        await self.ensure_tables()
        jobs.register(self)
        self.leadership = Leadership(
            self.store.engine,
            self._become_leader,
            self._stop_leading,
            name=f"drops:{self.name}",
            poll_s=self.settings.leader_poll_s,
        )
        await self.leadership.start()

    @property
    def is_leader(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader

    async def _become_leader(self) -> None:
        scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=sync_url(self.store.url), tablename="apscheduler_jobs")},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": self.settings.misfire_grace_s,
                "max_instances": 1,
            },
            timezone=UTC,
        )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        await self.resolve_interrupted()
        scheduler.start()
        self.scheduler = scheduler
        await self.reconcile()
        self._tick_task = asyncio.create_task(self._tick_loop(), name="drops-tick")

    async def _stop_leading(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.scheduler is not None:
            with contextlib.suppress(Exception):
                self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def stop(self) -> None:
        try:
            await self.flush_activity()
        except Exception:
            _log.exception("could not save channel activity at shutdown")
        if self.leadership is not None:
            await self.leadership.stop()
        for task in list(self._background):
            task.cancel()
        jobs.unregister(self)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("drops tick failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def now(self) -> datetime:
        return self.clock()

    # -- store helpers -------------------------------------------------------------------------------------------

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

    # -- jobs ----------------------------------------------------------------------------------------------------

    def _auto_hour(self, row: DropChannel) -> int:
        """The local hour a `--time auto` drop fires at: the planner's pick, or the default before its first."""
        return row.auto_hour if row.auto_hour is not None else self.settings.default_hour

    def _job_id(self, key: str) -> str:
        return f"drop:{key}"

    def _next_after_day(self, schedule: Schedule, auto_hour: int, after: datetime) -> datetime | None:
        """The first fire time on a later local day than `after` (one auto drop per day at most)."""
        local = after.astimezone(schedule.zone)
        start_of_next_day = datetime(local.year, local.month, local.day, tzinfo=schedule.zone) + timedelta(days=1)
        return schedule.trigger(auto_hour).get_next_fire_time(None, start_of_next_day)

    async def _sync_job(self, row: DropChannel, *, after_slot: datetime | None = None) -> None:
        """Create or replace the channel's job so exactly one exists, matching its settings."""
        if self.scheduler is None:
            return
        job_id = self._job_id(row.key)
        if not row.enabled or row.paused:
            with contextlib.suppress(Exception):
                self.scheduler.remove_job(job_id)
            return
        schedule = _schedule(row)
        auto_hour = self._auto_hour(row)
        trigger = schedule.trigger(auto_hour)
        next_run = None
        if after_slot is not None and schedule.time == "auto" and not schedule.is_cron:
            next_run = self._next_after_day(schedule, auto_hour, after_slot)
        kwargs: dict[str, Any] = {
            "id": job_id,
            "name": f"drops for {row.key}",
            "trigger": trigger,
            "kwargs": {"service": self.name, "channel_key": row.key, "version": _version(row)},
            "replace_existing": True,
        }
        if next_run is not None:
            kwargs["next_run_time"] = next_run
        self.scheduler.add_job(jobs.FIRE_DROP, **kwargs)

    async def reconcile(self) -> None:
        """Make the job store match the channel table (settings may change in any process)."""
        if self.scheduler is None:
            return
        async with self.store.session() as session:
            rows = list(await session.scalars(select(DropChannel)))
        wanted = {self._job_id(row.key): row for row in rows if row.enabled and not row.paused}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("drop:") and job.id not in wanted:
                self.scheduler.remove_job(job.id)
        for job_id, row in wanted.items():
            try:
                job = self.scheduler.get_job(job_id)
                if job is None or job.kwargs.get("version") != _version(row):
                    await self._sync_job(row)
            except Exception:
                _log.exception("drops for %s could not be scheduled; the other channels still are", row.key)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        if event.job_id.startswith("drop:"):
            self._spawn(self._record_missed(event.job_id.removeprefix("drop:"), event.scheduled_run_time))

    async def _record_missed(self, key: str, latest: datetime) -> None:
        try:
            await self._record_missed_slots(key, latest)
        except Exception:
            _log.exception("could not record the drops missed for %s", key)

    async def _record_missed_slots(self, key: str, latest: datetime) -> None:
        row = await self._channel(key)
        if row is None:
            return
        grace = self.settings.misfire_grace_s
        slots = self._slots_since(row, latest)
        trigger = _schedule(row).trigger(self._auto_hour(row))
        for slot in slots or [latest]:
            note = f"missed while offline (over {grace} s late)"
            await self._claim(row, f"{key}@{slot_wall_time(slot, trigger)}", slot, MISSED, note)
        await self._save_channel(key, last_slot_at=latest)
        _log.warning("drops for %s: %d slot(s) missed while offline", key, len(slots) or 1)

    def _slots_since(self, row: DropChannel, until: datetime) -> list[datetime]:
        schedule = _schedule(row)
        auto_hour = self._auto_hour(row)
        after = row.last_slot_at or max(row.updated_at or until, until - timedelta(days=8))
        after = max(after, until - timedelta(days=31))
        return fire_times(schedule.trigger(auto_hour), after, until)

    # -- one slot ------------------------------------------------------------------------------------------------

    async def run_slot(self, key: str) -> None:
        """A channel's job fired: record any slots missed before this one, then plan and post this one."""
        row = await self._channel(key)
        if row is None or not row.enabled or row.paused:
            return
        now = self.now()
        slots = self._slots_since(row, now + timedelta(seconds=1))
        slot = slots[-1] if slots else now.replace(second=0, microsecond=0)
        schedule = _schedule(row)
        trigger = schedule.trigger(self._auto_hour(row))
        for earlier in slots[:-1]:
            earlier_key = f"{key}@{slot_wall_time(earlier, trigger)}"
            await self._claim(row, earlier_key, earlier, MISSED, "coalesced after downtime")
        run_id = await self._claim(row, f"{key}@{slot_wall_time(slot, trigger)}", slot)
        await self._save_channel(key, last_slot_at=slot)
        if run_id is None:
            _log.info("drop %s@%s was already handled", key, slot.isoformat())
            return
        try:
            await self._plan_and_post(row, run_id, slot)
        except Exception as exc:
            await self._fail_run(run_id, exc)

    async def _plan_and_post(self, row: DropChannel, run_id: int, slot: datetime) -> None:
        """Plan the claimed run at the hour it fires (the hour chosen for it), post it, and schedule the next one."""
        key = row.key
        schedule = _schedule(row)
        local = slot.astimezone(schedule.zone)
        if schedule.is_cron and local.hour in quiet_hours(schedule.quiet):
            await self._set_run(run_id, status=SKIPPED, note="quiet hours")
            return
        # Engagement whose window closed before this slot is learned before this slot chooses.
        await self.settle_due(channel_key=key)
        row = await self._channel(key) or row
        planner = await self._planner(row, schedule)
        if not planner.kinds:
            raise _RunUnusable(self._no_kinds_note(row))
        plan = planner.choose(local, hour=local.hour)
        auto = schedule.time == "auto" and not schedule.is_cron
        next_day = datetime(local.year, local.month, local.day, tzinfo=schedule.zone) + timedelta(days=1)
        values: dict[str, Any] = {}
        if auto:
            # The hour of the next auto drop is chosen now, so its job fires at it and its run posts at it.
            values["auto_hour"] = planner.choose_hour(next_day)[0]
        await self._save_channel(key, planner=planner.to_state(), **values)
        await self._set_run(run_id, plan=plan.as_dict())
        if not plan.post:
            await self._set_run(
                run_id, status=SKIPPED, note=f"backing off (engagement low; every {planner.backoff + 1})"
            )
        else:
            await self.deliver(run_id)
        if auto:
            # The next auto drop is on a later day, at whatever hour the planner picked; the slots of today's
            # other hours were never due, so they must not count as missed.
            await self._save_channel(key, last_slot_at=next_day.astimezone(UTC) - timedelta(seconds=1))
            row = await self._channel(key) or row
            await self._sync_job(row, after_slot=slot)

    async def _fail_run(self, run_id: int, exc: BaseException) -> None:
        """A run that could not be processed is failed with a note (status and the admin channel), so it never
        blocks the next tick, other runs or other channels. A run that may have been sent is left alone."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, _RunUnusable):
            _log.warning("drop run %s cannot proceed: %s", run_id, reason)
        else:
            _log.error("drop run %s failed unexpectedly", run_id, exc_info=exc)
        try:
            run = await self._run(run_id)
            if run is None or run.status in FINAL or run.status == POSTING:
                return
            note = f"not posted: {reason}"
            await self._set_run(run_id, status=FAILED, note=note)
            row = await self._channel(run.channel_key)
            if row is not None:
                await self.alert(row, f"A drop for {row.channel} was not posted: {reason}")
        except Exception:
            _log.exception("could not record the failure of drop run %s", run_id)

    def _no_kinds_note(self, row: DropChannel) -> str:
        return (
            f"none of this channel's kinds ({', '.join(row.kinds)}) is configured any more; "
            "choose others with /drops enable --kinds"
        )

    async def _planner(self, row: DropChannel, schedule: Schedule) -> Planner:
        """The channel's planner with the current options and activity counts (in the channel's zone)."""
        planner = Planner.from_state(row.planner)
        planner.set_options(self._kinds(row), self.chorus.settings.tones, self._topics(row))
        planner.fixed_hour = schedule.fixed_hour
        planner.quiet = schedule.quiet
        planner.activity = await self.activity_matrix(_conversation(row), schedule.tz)
        return planner

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

    def _spec(self, kind: str) -> KindSpec:
        drop_kind = self.settings.kinds.get(kind)
        if drop_kind is not None:
            return KindSpec(**drop_kind.model_dump())
        spec = self.chorus.settings.kinds.get(kind)
        if spec is None:
            raise UserError(f"The drop kind {kind!r} is no longer configured.")
        return spec

    async def _generate(self, row: DropChannel, plan: DropPlan) -> tuple[str, str, int, list[float] | None]:
        """Write the drop through the studio (priority SCHEDULED); regenerate near-repeats of recent drops."""
        spec = self._spec(plan.kind)
        recent = await self._recent_embeddings(row.key)
        draft = Draft(
            kind=plan.kind,
            tone=plan.tone,
            prompt=plan.topic,
            spec=spec,
            first_ask=render_template(spec, plan.topic, plan.tone),
            n=1,
            priority=Priority.SCHEDULED,
        )
        event = Command(conversation=_conversation(row), user=DROPS_USER, name="drops")
        best: tuple[str, int, list[float] | None] | None = None
        for _attempt in range(self.settings.max_regenerations + 1):
            capture = _Capture()
            record = await self.chorus.studio.run(Context(event=event, responder=capture, app=self.chorus), draft)
            if record is None:
                failure = capture.replies[-1].parts[0] if capture.replies else "the model returned nothing"
                raise GenerationError(failure.lstrip("⚠ "))
            text = record.variants[0]
            vector = None
            if self.chorus.embedder is not None:
                vector = list((await self.chorus.embedder.embed([text]))[0])
            best = (text, record.id, vector)
            if vector is None or not too_similar(vector, recent, self.settings.similarity_threshold):
                break
            _log.info("drop for %s too close to a recent one; regenerating", row.key)
        assert best is not None
        title = f"{KIND_LABELS.get(plan.kind, plan.kind.capitalize())} · {plan.topic}"
        return title, best[0], best[1], best[2]

    async def _recent_embeddings(self, key: str, n: int = 20) -> list[list[float]]:
        async with self.store.session() as session:
            rows = await session.scalars(
                select(DropRun.embedding)
                .where(DropRun.channel_key == key, DropRun.embedding.is_not(None))
                .order_by(DropRun.id.desc())
                .limit(n)
            )
            return [list(vector) for vector in rows if vector]

    def _reply(self, run: DropRun) -> Reply:
        actions = (
            ReplyAction(RATE_UP, "👍", "+", value="+1", generation_id=run.generation_id),
            ReplyAction(RATE_DOWN, "👎", "-", value="-1", generation_id=run.generation_id),
        )
        footer = "React, reply or rate it: drops learn what this channel enjoys."
        return Reply(
            parts=(run.text,), title=run.title, footer=footer, actions=actions, generation_id=run.generation_id
        )

    async def deliver(self, run_id: int) -> DropRun:
        """Generate (if not yet) and post one run, exactly once: 'posting' before the send, 'posted' after."""
        run = await self._run(run_id)
        assert run is not None
        row = await self._channel(run.channel_key)
        if row is None or run.status in FINAL:
            return run
        if self.publisher is None:
            raise UserError("Chorus is not connected to a platform yet, so it cannot post.")
        repaired = ""
        if not run.text:
            plan, repaired = await self._usable_plan(run, row)
            try:
                title, text, generation_id, vector = await self._generate(row, plan)
            except GenerationError as exc:
                return await self._failed_attempt(run, row, exc)
            await self._set_run(run_id, title=title, text=text, generation_id=generation_id, embedding=vector)
        async with self.store.session() as session, session.begin():
            claimed = await session.execute(
                update(DropRun)
                .where(DropRun.id == run_id, DropRun.status.in_((GENERATING, RETRYING)))
                .values(status=POSTING, attempts=DropRun.attempts + 1)
            )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            return await self._run(run_id) or run
        run = await self._run(run_id)
        assert run is not None
        try:
            message_ref = await self.publisher.publish(_conversation(row), self._reply(run))
        except Exception as exc:
            return await self._failed_attempt(run, row, exc)
        await self._set_run(run_id, status=POSTED, message_ref=message_ref, posted_at=self.now(), note=repaired)
        if run.generation_id is not None and message_ref:
            await self.store.set_message_ref(run.generation_id, message_ref)
        _log.info("posted drop %s as %s", run.run_key, message_ref)
        return await self._run(run_id) or run

    async def _usable_plan(self, run: DropRun, row: DropChannel) -> tuple[DropPlan, str]:
        """The run's plan, repaired when it cannot be used as stored: a run interrupted before it was planned is
        planned now; a kind removed from the config is replaced by one of the channel's remaining kinds. The note
        says what was repaired (shown in /drops status and sent to the admin channel)."""
        kinds = self._kinds(row)
        try:
            plan: DropPlan | None = DropPlan.from_dict(run.plan or {})
        except (KeyError, TypeError, ValueError):
            plan = None
        if plan is not None and plan.kind in kinds:
            return plan, ""
        if not kinds:
            raise _RunUnusable(self._no_kinds_note(row))
        schedule = _schedule(row)
        planner = await self._planner(row, schedule)
        local = run.scheduled_for.astimezone(schedule.zone)
        fresh = planner.choose(local, hour=local.hour)
        if plan is None:
            note = "planned late: it was interrupted before it was planned"
            plan = dataclasses.replace(fresh, post=True)
        else:
            note = f"the kind {plan.kind!r} is no longer configured, so it became a {fresh.kind}"
            plan = dataclasses.replace(plan, kind=fresh.kind)
        await self._save_channel(row.key, planner=planner.to_state())
        await self._set_run(run.id, plan=plan.as_dict(), note=note)
        await self.alert(row, f"A drop for {row.channel} was repaired: {note}.")
        return plan, note

    async def _failed_attempt(self, run: DropRun, row: DropChannel, exc: BaseException) -> DropRun:
        attempts = run.attempts if run.status == POSTING else run.attempts + 1
        reason = str(exc) or type(exc).__name__
        if _unavailable(exc):
            note = f"Chorus can no longer post here ({reason}); drops paused."
            await self._set_run(run.id, status=FAILED, attempts=attempts, note=note)
            await self._save_channel(row.key, paused=True, pause_reason=note, updated_at=self.now())
            await self._sync_job(await self._channel(row.key) or row)
            await self.alert(row, f"Drops for {row.channel} are paused: {note} Fix the permission, then /drops resume.")
        elif attempts >= self.settings.max_attempts:
            note = f"gave up after {attempts} attempts: {reason}"
            await self._set_run(run.id, status=FAILED, attempts=attempts, note=note)
            await self.alert(row, f"A drop for {row.channel} failed {attempts} times and was dropped: {reason}")
        else:
            delay = self.settings.retry_base_s * 2 ** (attempts - 1)
            await self._set_run(
                run.id,
                status=RETRYING,
                attempts=attempts,
                next_attempt_at=self.now() + timedelta(seconds=delay),
                note=f"attempt {attempts} failed: {reason}; retrying in {delay:.0f} s",
            )
        _log.warning("drop %s attempt %d failed: %s", run.run_key, attempts, reason)
        return await self._run(run.id) or run

    async def alert(self, row: DropChannel, text: str) -> None:
        """Tell the configured admin channel; without one (or if that fails too) the log has it."""
        admin = self.settings.admin_channel
        if not admin or self.publisher is None:
            _log.warning("drops alert (no admin channel configured): %s", text)
            return
        try:
            await self.publisher.publish(Conversation(row.platform, row.workspace, admin), Reply.text(f"⚠ {text}"))
        except Exception as exc:
            _log.warning("drops alert could not reach the admin channel %s (%s): %s", admin, exc, text)

    # -- restart, retries, engagement ----------------------------------------------------------------------------

    async def resolve_interrupted(self) -> int:
        """Runs a previous process left mid-way: 'posting' may have reached the channel, so it is never re-sent
        (marked unconfirmed); 'generating' had sent nothing, so it is retried."""
        async with self.store.session() as session, session.begin():
            unconfirmed = await session.execute(
                update(DropRun)
                .where(DropRun.status == POSTING)
                .values(status=UNCONFIRMED, note="interrupted while sending; not re-sent to avoid a double post")
            )
            await session.execute(
                update(DropRun)
                .where(DropRun.status == GENERATING)
                .values(status=RETRYING, next_attempt_at=self.now(), note="interrupted while writing; retrying")
            )
        count = unconfirmed.rowcount or 0  # type: ignore[attr-defined]
        if count:
            _log.warning("%d drop(s) were interrupted mid-send and are marked unconfirmed", count)
        return count

    async def tick(self) -> None:
        """Leader housekeeping: save activity, retry due sends, settle engagement, follow settings changes, prune.
        Each step and each run is isolated: one that fails is logged (a run is failed with a note) and the rest
        still happens."""
        await self._guarded("saving channel activity", self.flush_activity)
        now = self.now()
        due: list[int] = []
        try:
            async with self.store.session() as session:
                due = list(
                    await session.scalars(
                        select(DropRun.id).where(DropRun.status == RETRYING, DropRun.next_attempt_at <= now)
                    )
                )
        except Exception:
            _log.exception("drops tick could not list the runs due for a retry")
        for run_id in due:
            try:
                await self.deliver(run_id)
            except Exception as exc:
                await self._fail_run(run_id, exc)
        await self._guarded("settling engagement", self.settle_due)
        await self._guarded("reconciling schedules", self.reconcile)
        await self._guarded("pruning old drops data", self.prune_if_due)

    async def _guarded(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        try:
            await step()
        except Exception:
            _log.exception("drops tick: %s failed", what)

    async def prune_if_due(self, every: timedelta = timedelta(hours=1)) -> Pruned | None:
        """Apply the retention settings at most once per `every` (the tick runs far more often)."""
        now = self.now()
        if self._pruned_at is not None and now - self._pruned_at < every:
            return None
        self._pruned_at = now
        rows = await prune_rows(self.store.engine, self.settings, now)
        images = await asyncio.to_thread(prune_stats_images, self._stats_dir(), self.settings.keep_stats_images_h)
        pruned = dataclasses.replace(rows, stats_images=images)
        if pruned != Pruned():
            _log.info("drops retention deleted %s", pruned)
        return pruned

    def _stats_dir(self) -> Path:
        return Path(self.chorus.settings.home_dir) / "stats"

    async def engagement_for(self, run: DropRun) -> Engagement:
        assert run.posted_at is not None
        window_end = run.posted_at + timedelta(hours=self.settings.engagement_window_h)
        async with self.store.session() as session:
            events = list(
                await session.scalars(
                    select(EngagementEvent).where(
                        EngagementEvent.generation_id == run.generation_id,
                        EngagementEvent.created_at <= window_end,
                    )
                )
            )
        reactions: Counter[str] = Counter()
        replies = up = down = 0
        for event in events:
            if event.kind == "reaction":
                # A removal is stored as "-<emoji>"; Slack's thumbs-down is itself named "-1".
                removed = event.value.startswith("-") and event.value != "-1"
                name = event.value[1:] if removed else event.value
                reactions[_REACTION_ALIASES.get(name, name)] += -1 if removed else 1
            elif event.kind == "reply":
                replies += 1
            elif event.kind == "click":
                up += event.value == "+1"
                down += event.value == "-1"
        return Engagement(
            reactions={k: v for k, v in reactions.items() if v > 0}, replies=replies, clicks_up=up, clicks_down=down
        )

    def reward(self, engagement: Engagement) -> float:
        return engagement_reward(
            engagement,
            self.settings.reaction_weights,
            reply_weight=self.settings.reply_weight,
            click_weight=self.settings.click_weight,
        )

    async def settle_due(self, channel_key: str | None = None) -> int:
        """Drops whose engagement window closed become rewards for their channel's planner (one channel's, or all).
        A run that cannot be learned from is still settled, with its reward, so it is not tried again."""
        cutoff = self.now() - timedelta(hours=self.settings.engagement_window_h)
        query = select(DropRun).where(DropRun.status == POSTED, DropRun.settled.is_(False), DropRun.posted_at <= cutoff)
        if channel_key is not None:
            query = query.where(DropRun.channel_key == channel_key)
        async with self.store.session() as session:
            runs = list(await session.scalars(query.order_by(DropRun.posted_at)))
        settled = 0
        for run in runs:
            try:
                engagement = await self.engagement_for(run)
            except Exception:
                _log.exception("could not count the engagement of drop %s; trying again later", run.run_key)
                continue
            reward = self.reward(engagement)
            try:
                await self._learn(run, engagement, reward)
            except Exception:
                _log.exception("drop %s: its engagement could not be learned from", run.run_key)
            await self._set_run(run.id, settled=True, reward=reward, engagement=dataclasses.asdict(engagement))
            settled += 1
        return settled

    async def _learn(self, run: DropRun, engagement: Engagement, reward: float) -> None:
        row = await self._channel(run.channel_key)
        if row is None or not run.plan:
            return
        planner = Planner.from_state(row.planner)
        planner.activity = await self.activity_matrix(_conversation(row), row.tz)
        planner.observe(
            DropPlan.from_dict(run.plan),
            engagement,
            reaction_weights=self.settings.reaction_weights,
            reward=reward,
        )
        await self._save_channel(row.key, planner=planner.to_state())

    # -- channel activity ----------------------------------------------------------------------------------------

    def count_activity(self, conversation: Conversation, at: datetime, text: str = "") -> None:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        hour_of_week = int((at.astimezone(UTC) - _WEEK0).total_seconds() // 3600) % 168
        self._activity[(conversation.platform, conversation.workspace, conversation.channel, hour_of_week)] += 1
        if text:
            key = Conversation(conversation.platform, conversation.workspace, conversation.channel).key
            words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
            self._mined.setdefault(key, Counter()).update(words)

    async def flush_activity(self) -> None:
        """Write the buffered counts (one row per channel and hour of the week)."""
        if not self._tables_ready:
            return
        pending, self._activity = self._activity, Counter()
        mined, self._mined = self._mined, {}
        for (platform, workspace, channel, how), n in pending.items():
            match = and_(
                DropActivity.platform == platform,
                DropActivity.workspace == workspace,
                DropActivity.channel == channel,
                DropActivity.hour_of_week == how,
            )
            for _ in range(3):
                try:
                    async with self.store.session() as session, session.begin():
                        done = await session.execute(
                            update(DropActivity).where(match).values(count=DropActivity.count + n)
                        )
                        if not done.rowcount:  # type: ignore[attr-defined]
                            session.add(
                                DropActivity(
                                    platform=platform, workspace=workspace, channel=channel, hour_of_week=how, count=n
                                )
                            )
                    break
                except IntegrityError:
                    continue
        for key, words in mined.items():
            row = await self._channel(key)
            if row is None or not row.learn_topics:
                continue
            merged = Counter({w: v * 0.98 for w, v in (row.mined or {}).items()})
            merged.update(words)
            await self._save_channel(key, mined=dict(merged.most_common(50)))

    async def activity_matrix(self, conversation: Conversation, tz: str) -> Any:
        """Counts as weekday × hour in the channel's zone (at its current UTC offset)."""
        import numpy as np

        from scheduler.schedule import parse_zone

        offset = self.now().astimezone(parse_zone(tz)).utcoffset() or timedelta(0)
        shift = int(offset.total_seconds() // 3600)
        matrix = np.zeros((7, 24))
        async with self.store.session() as session:
            rows = await session.execute(
                select(DropActivity.hour_of_week, DropActivity.count).where(
                    DropActivity.platform == conversation.platform,
                    DropActivity.workspace == conversation.workspace,
                    DropActivity.channel == conversation.channel,
                )
            )
            for how, count in rows:
                local = (how + shift) % 168
                matrix[local // 24, local % 24] += count
        return matrix

    async def _on_activity(self, ctx: Context) -> bool:
        event = ctx.event
        assert isinstance(event, Activity)
        self.count_activity(event.conversation, event.at, event.text)
        if event.conversation.thread:
            # A thread someone opened on a drop (Discord gives it the drop's message id) is a reply to it, even
            # though the message does not address Chorus; it still counts as activity too.
            run = await self._drop_by_message(event.conversation.platform, (event.conversation.thread,))
            if run is not None:
                await self.store.add_engagement(
                    event.conversation, "reply", user=event.user, generation_id=run.generation_id
                )
        return False

    async def _count_command(self, ctx: Context, call_next: Handler) -> None:
        if isinstance(ctx.event, Command) and ctx.event.user.id != DROPS_USER.id:
            self.count_activity(ctx.event.conversation, self.now())
        await call_next(ctx)

    async def _drop_by_message(self, platform: str, refs: Iterable[str | None]) -> DropRun | None:
        wanted = [ref for ref in refs if ref]
        if not wanted or not self._tables_ready:
            return None
        async with self.store.session() as session:
            return await session.scalar(
                select(DropRun).where(DropRun.platform == platform, DropRun.message_ref.in_(wanted)).limit(1)
            )

    async def _on_message(self, ctx: Context) -> bool:
        """Replies to a drop (or messages in its thread) are engagement, not refinement requests."""
        message = ctx.event
        assert isinstance(message, Message)
        self.count_activity(message.conversation, self.now(), message.text)
        run = await self._drop_by_message(
            message.conversation.platform, (message.reply_to, message.conversation.thread)
        )
        if run is None:
            return False
        await self.store.add_engagement(
            message.conversation, "reply", user=message.user, generation_id=run.generation_id
        )
        return True

    async def _on_action(self, ctx: Context) -> bool:
        action = ctx.event
        assert isinstance(action, Action)
        if action.action_id not in (RATE_UP, RATE_DOWN) or not self._tables_ready:
            return False
        generation_id = action.generation_id
        if generation_id is None and action.message_ref is None:
            # A shortcut key with no id means "the latest result here" (the terminal's + and -).
            latest = await self.store.latest_generation(action.conversation)
            generation_id = latest.id if latest is not None else None
        if generation_id is not None:
            async with self.store.session() as session:
                run = await session.scalar(select(DropRun).where(DropRun.generation_id == generation_id))
        else:
            run = await self._drop_by_message(action.conversation.platform, (action.message_ref,))
        if run is None:
            return False
        value = "+1" if action.action_id == RATE_UP else "-1"
        await self.store.add_engagement(
            action.conversation, "click", value, user=action.user, generation_id=run.generation_id
        )
        await ctx.responder.send(Reply.text("Thanks, noted. Drops here will lean that way.", ephemeral=True))
        return True

    # -- DropsControl --------------------------------------------------------------------------------------------

    def _all_kinds(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.kinds, *self.chorus.settings.kinds]))

    async def enable(self, conversation: Conversation, user: User, options: DropsOptions) -> str:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        known = self._all_kinds()
        kept = [kind for kind in row.kinds if kind in known] if row else []
        kinds = list(options.kinds) if options.kinds else (kept or list(self.settings.default_kinds))
        for kind in kinds:
            if kind not in known:
                raise UserError(f"Unknown kind {kind!r}.{did_you_mean(kind, known)} Kinds: {', '.join(known)}.")
        cadence = options.cadence or (row.cadence if row else "daily")
        time = options.time or (row.time if row else "auto")
        is_cron = cadence.lower() not in CADENCES
        if options.cadence and options.time is None and is_cron:
            time = "auto"  # a cron carries its own time
        if options.time is not None and is_cron:
            raise UserError('--time does not combine with a cron cadence: put the hour in the cron, e.g. "30 9 * * *".')
        tz = options.tz or (row.tz if row else self.settings.default_tz)
        quiet = options.quiet if options.quiet is not None else (row.quiet if row else "")
        schedule = build_schedule(cadence, time, tz, quiet)
        now = self.now()
        values: dict[str, Any] = {
            "enabled": True,
            "paused": False,
            "pause_reason": "",
            "kinds": kinds,
            "cadence": schedule.cadence,
            "time": schedule.time,
            "tz": schedule.tz,
            "quiet": schedule.quiet_text,
            "updated_at": now,
            "enabled_by": user.name,
        }
        updated = row is not None and row.enabled
        if row is None:
            planner = Planner(
                kinds,
                self.chorus.settings.tones,
                list(self.settings.topics),
                seed=zlib.crc32(conversation.key.encode()),
                default_hour=self.settings.default_hour,
            )
            try:
                async with self.store.session() as session, session.begin():
                    session.add(
                        DropChannel(
                            key=conversation.key,
                            platform=conversation.platform,
                            workspace=conversation.workspace,
                            channel=conversation.channel,
                            thread=conversation.thread,
                            topics=list(self.settings.topics),
                            mined={},
                            planner=planner.to_state(),
                            created_at=now,
                            last_slot_at=now,
                            **values,
                        )
                    )
            except IntegrityError:  # enabled at the same moment elsewhere: update that row instead
                await self._save_channel(conversation.key, **values)
        else:
            await self._save_channel(conversation.key, last_slot_at=max(row.last_slot_at or now, now), **values)
        row = await self._channel(conversation.key)
        assert row is not None
        if schedule.time == "auto" and not schedule.is_cron and row.auto_hour is None:
            # Activity counted before drops were enabled already says when the channel is busy.
            peak = (await self._planner(row, schedule)).peak_hour()
            if peak is not None:
                await self._save_channel(row.key, auto_hour=peak)
                row = await self._channel(row.key) or row
        await self._sync_job(row)
        next_at = await self.next_run(row)
        verb = "Updated drops" if updated else "Drops are on"
        when = f" Next: {self._fmt(next_at, schedule)}." if next_at else ""
        return (
            f"{verb} here: {schedule.describe()}. Kinds: {', '.join(kinds)}.{when} /drops status shows what they learn."
        )

    async def next_run(self, row: DropChannel) -> datetime | None:
        if not row.enabled or row.paused:
            return None
        if self.scheduler is not None:
            job = self.scheduler.get_job(self._job_id(row.key))
            if job is not None and job.next_run_time is not None:
                return job.next_run_time
        return _schedule(row).trigger(self._auto_hour(row)).get_next_fire_time(None, self.now())

    @staticmethod
    def _fmt(at: datetime, schedule: Schedule) -> str:
        return at.astimezone(schedule.zone).strftime("%a %Y-%m-%d %H:%M %Z")

    async def _require(self, conversation: Conversation) -> DropChannel:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        if row is None or not row.enabled:
            raise UserError("Drops are not enabled here. Start them with /drops enable (see /help).")
        return row

    async def change_state(self, conversation: Conversation, change: StateChange) -> str:
        row = await self._require(conversation)
        now = self.now()
        if change == "pause":
            await self._save_channel(row.key, paused=True, pause_reason="paused by a moderator", updated_at=now)
            text = "Drops are paused here. /drops resume starts them again."
        elif change == "resume":
            # Slots that passed while paused are not "missed": start counting from now.
            await self._save_channel(row.key, paused=False, pause_reason="", updated_at=now, last_slot_at=now)
            text = "Drops are back on."
        else:
            await self._save_channel(row.key, enabled=False, paused=False, updated_at=now)
            text = "Drops are off here. What they learned is kept if you enable them again."
        fresh = await self._channel(row.key)
        assert fresh is not None
        row = fresh
        await self._sync_job(row)
        if change == "resume":
            next_at = await self.next_run(row)
            if next_at:
                text += f" Next: {self._fmt(next_at, _schedule(row))}."
        return text

    async def post_now(self, conversation: Conversation, user: User) -> str:
        row = await self._require(conversation)
        schedule = _schedule(row)
        now = self.now()
        planner = await self._planner(row, schedule)
        if not planner.kinds:
            raise UserError(self._no_kinds_note(row).capitalize() + ".")
        run_id = await self._claim(row, f"now:{row.key}:{uuid.uuid4().hex}", now)
        assert run_id is not None
        local = now.astimezone(schedule.zone)
        plan = planner.choose(local, hour=local.hour)
        plan = dataclasses.replace(plan, post=True)
        await self._save_channel(row.key, planner=planner.to_state())
        await self._set_run(run_id, plan=plan.as_dict())
        run = await self.deliver(run_id)
        if run.status == POSTED:
            return f"Posted a {plan.kind} ({plan.tone}, about {plan.topic})."
        return f"Could not post the drop: {(run.note or run.status).rstrip('.')}."

    async def topics(self, conversation: Conversation, action: str, topics: tuple[str, ...]) -> str:
        row = await self._require(conversation)
        current = list(row.topics)
        if action == "add":
            current += [t for t in topics if t.lower() not in {c.lower() for c in current}]
            await self._save_channel(row.key, topics=current, updated_at=self.now())
        elif action == "remove":
            missing = [t for t in topics if t.lower() not in {c.lower() for c in current}]
            if missing:
                raise UserError(f"Not a topic here: {', '.join(missing)}. Topics: {', '.join(current)}.")
            left = [c for c in current if c.lower() not in {t.lower() for t in topics}]
            if not left:
                raise UserError("Drops need at least one topic; add another before removing the last.")
            await self._save_channel(row.key, topics=left, updated_at=self.now())
            current = left
        elif action == "learn":
            on = topics[0].lower() == "on"
            await self._save_channel(row.key, learn_topics=on, mined={} if not on else row.mined)
            if on:
                return (
                    "Topic learning is on: drops will also use themes from this channel's messages "
                    "(word counts only, no messages are stored). /drops topics learn off stops it."
                )
            return "Topic learning is off; learned themes were forgotten."
        row = await self._channel(row.key) or row
        learned = self._topics(row)[len(row.topics) :]
        extra = f" Learned from the channel: {', '.join(learned)}." if learned else ""
        return f"Topics: {', '.join(current)}.{extra}"

    async def status(self, conversation: Conversation) -> str:
        await self.ensure_tables()
        row = await self._channel(conversation.key)
        if row is None or not row.enabled:
            return "Drops are off here. Moderators can start them with /drops enable (see /help)."
        schedule = _schedule(row)
        planner = await self._planner(row, schedule)
        lines = [f"Schedule: {schedule.describe()} · kinds: {', '.join(row.kinds)}"]
        if row.paused:
            lines.append(f"Paused: {(row.pause_reason or 'by a moderator').rstrip('.')}. /drops resume restarts.")
        else:
            next_at = await self.next_run(row)
            lines.append(f"Next drop: {self._fmt(next_at, schedule) if next_at else 'not scheduled'}")
        if schedule.time == "auto" and not schedule.is_cron:
            peak = planner.peak_hour()
            if peak is not None:
                lines.append(f"Timing: busiest hour {peak:02d}:00 {schedule.tz} (from the channel's activity)")
            elif planner.observed:
                lines.append("Timing: no activity counted yet, so trying hours and learning from engagement")
            else:
                lines.append(f"Timing: {self._auto_hour(row):02d}:00 until the channel's activity is known")
        learning = "on" if row.learn_topics else "off (opt in: /drops topics learn on)"
        lines.append(f"Topics: {', '.join(self._topics(row))} · learning from messages: {learning}")
        if planner.observed:
            learned = planner.learned(2)
            best = " · ".join(
                f"{group}s {', '.join(name for name, _ in items)}" for group, items in learned.items() if items
            )
            if best:
                lines.append(f"Learned from {planner.observed} drop(s): does best with {best}")
            elif not planner.engaged:
                lines.append(f"Learned from {planner.observed} drop(s): none got any engagement yet, so no favourite")
            else:
                lines.append(f"Learned from {planner.observed} drop(s): no clear favourite yet")
        else:
            lines.append("Learned: nothing yet (engagement counts for 24 h after each drop)")
        if planner.backoff:
            lines.append(f"Frequency: backing off, posting every {planner.backoff + 1} slots while engagement is low")
        async with self.store.session() as session:
            runs = list(
                await session.scalars(
                    select(DropRun).where(DropRun.channel_key == row.key).order_by(DropRun.id.desc()).limit(40)
                )
            )
        missed = [run for run in runs if run.status == MISSED]
        if missed:
            latest = max(run.scheduled_for for run in missed)
            lines.append(f"Missed while offline: {len(missed)} (latest {self._fmt(latest, schedule)}), not posted late")
        unconfirmed = [run for run in runs if run.status == UNCONFIRMED]
        if unconfirmed:
            lines.append(f"Unconfirmed: {len(unconfirmed)} drop(s) were interrupted mid-send and not re-sent")
        shown = [run for run in runs if run.status not in (MISSED,)][:5]
        if shown:
            lines.append("Recent:")
        for run in shown:
            plan = run.plan or {}
            what = f"{plan.get('kind', '?')} · {plan.get('tone', '?')} · {plan.get('topic', '?')}" if plan else "-"
            when = self._fmt(run.scheduled_for, schedule)
            result = run.status
            if run.reward is not None:
                result += f", engagement {run.reward:g}"
            elif run.status == POSTED:
                result += ", engagement still counting"
            if run.note and run.status in (FAILED, RETRYING, SKIPPED, POSTED):
                result += f" ({run.note})"
            lines.append(f"  {when}  {what}: {result}")
        return "\n".join(lines)

    async def stats(self, conversation: Conversation) -> StatsImage:
        from scheduler.stats import StatsData, render_stats

        await self.ensure_tables()
        await self.flush_activity()
        row = await self._channel(conversation.key)
        tz = row.tz if row else self.settings.default_tz
        matrix = await self.activity_matrix(conversation, tz)
        since = self.now() - timedelta(days=30)
        async with self.store.session() as session:
            runs = list(
                await session.scalars(
                    select(DropRun)
                    .where(
                        DropRun.channel_key == conversation.key,
                        DropRun.scheduled_for >= since,
                        or_(DropRun.status == POSTED, DropRun.status == FAILED),
                    )
                    .order_by(DropRun.scheduled_for)
                )
            )
        data = StatsData(
            channel=conversation.channel,
            tz=tz,
            activity=matrix,
            drops=[
                (
                    run.scheduled_for,
                    (run.plan or {}).get("kind", "?"),
                    (run.plan or {}).get("tone", "?"),
                    run.reward,
                    run.status,
                )
                for run in runs
            ],
            start=since,
            end=self.now(),
        )
        directory = self._stats_dir()
        stamp = self.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", conversation.channel)[:40] or "channel"
        path = await asyncio.to_thread(render_stats, data, directory / f"stats-{slug}-{stamp}.png")
        await asyncio.to_thread(prune_stats_images, directory, self.settings.keep_stats_images_h, keep=path)
        return StatsImage(summary=data.summary(), path=path)

    async def forget_channel(self, conversation: Conversation) -> None:
        """Remove a channel's drop settings, runs and activity (used by tests and a future /forget for channels)."""
        async with self.store.session() as session, session.begin():
            await session.execute(delete(DropRun).where(DropRun.channel_key == conversation.key))
            await session.execute(delete(DropChannel).where(DropChannel.key == conversation.key))
