"""The run lifecycle: one stored `DropRun` per slot, exactly once.

A run is claimed with a unique key, planned at the hour it fires, written, marked "posting" before the send and
"posted" after, so a crash mid-send is never re-sent. Failed sends retry with backoff and then alert; a channel
Chorus may no longer post to is paused. A run that cannot proceed is repaired or failed with a note, never left to
block the others.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import JobExecutionEvent
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from bots.actions import RATE_DOWN, RATE_UP
from bots.errors import UserError
from bots.events import Command, Conversation, User
from bots.reply import PublishForbidden, Reply, ReplyAction
from bots.router import Context
from bots.studio import Draft
from generation.prompts import render_template
from generation.types import GenerationError, Priority
from scheduler.core import DROPS_USER, KIND_LABELS, DropsCore, conversation_of, schedule_of
from scheduler.models import (
    FAILED,
    FINAL,
    GENERATING,
    MISSED,
    POSTED,
    POSTING,
    QUIET_NOTE,
    RETRYING,
    SKIPPED,
    UNCONFIRMED,
    DropChannel,
    DropRun,
)
from scheduler.planner import DropPlan, quiet_hours, too_similar
from scheduler.schedule import fire_times, slot_wall_time

_log = logging.getLogger(__name__)


# The longest wait between two tries of one drop, whatever `retry_base_s` and the attempt count make of it.
MAX_RETRY_DELAY_S = 6 * 3600.0
SETTLE_AHEAD = timedelta(hours=1)
UNANSWERED_NOTE = "no answer from the platform, so it may have been posted; not re-sent to avoid a double post"


def _unavailable(exc: BaseException) -> bool:
    """Does this publish failure mean "you may not post here" (not a passing outage)? The adapters map their
    platform's refusals (403, not_in_channel, archived, app removed…) to PublishForbidden; everything else is
    retried."""
    return isinstance(exc, PublishForbidden)


def _unanswered(exc: BaseException) -> bool:
    """Did the send time out waiting for the platform's answer? The post may have landed, so it is not re-sent."""
    return isinstance(exc, TimeoutError)


def retry_delay_s(attempts: int, base_s: float, exc: BaseException) -> float:
    """Doubling backoff from `base_s`, at least the wait the platform asked for (a 429's Retry-After, which the
    adapters put on the error as `retry_after_s`), at most MAX_RETRY_DELAY_S."""
    backoff = base_s * 2.0 ** min(attempts - 1, 64)
    asked = getattr(exc, "retry_after_s", None)
    if isinstance(asked, int | float) and asked > 0:
        backoff = max(backoff, float(asked))
    return min(backoff, MAX_RETRY_DELAY_S)


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


class RunLifecycle(DropsCore):
    """Slots firing, runs planned, written, posted, retried, repaired or failed."""

    def _on_missed(self, event: JobExecutionEvent) -> None:
        if event.job_id.startswith("drop:"):
            self._spawn(self._record_missed(event.job_id.removeprefix("drop:"), event.scheduled_run_time))

    async def _record_missed(self, key: str, latest: datetime, why: str = "while offline") -> None:
        try:
            await self._record_missed_slots(key, latest, why)
        except Exception:
            _log.exception("could not record the drops missed for %s", key)

    async def _record_missed_slots(self, key: str, latest: datetime, why: str = "while offline") -> None:
        row = await self._channel(key)
        if row is None:
            return
        grace = self.settings.misfire_grace_s
        slots = self._slots_since(row, latest)
        trigger = schedule_of(row).trigger(self._auto_hour(row))
        for slot in slots or [latest]:
            note = f"missed {why} (over {grace} s late)"
            await self._claim(row, f"{key}@{slot_wall_time(slot, trigger)}", slot, MISSED, note)
        await self._save_channel(key, last_slot_at=latest)
        _log.warning("drops for %s: %d slot(s) missed while offline", key, len(slots) or 1)

    def _slots_since(self, row: DropChannel, until: datetime) -> list[datetime]:
        schedule = schedule_of(row)
        auto_hour = self._auto_hour(row)
        after = row.last_slot_at or max(row.updated_at or until, until - timedelta(days=8))
        after = max(after, until - timedelta(days=31))
        return fire_times(schedule.trigger(auto_hour), after, until)

    async def run_slot(self, key: str) -> None:
        """A channel's job fired: record any slots missed before this one, then plan and post this one. When the
        database cannot be used (locked, connection lost), the slot is tried again at the next tick instead of lost."""
        fired_at = self.now()
        try:
            await self._run_slot(key)
        except OperationalError as exc:
            _log.warning("the drop slot of %s could not be handled (%s); trying again at the next tick", key, exc)
            self._slots_to_retry.setdefault(key, fired_at)
        else:
            self._slots_to_retry.pop(key, None)

    async def retry_slots(self) -> None:
        """Slots that fired while the database could not be used: handled now, or, once past the misfire grace,
        recorded as missed (shown in /drops status) as a slot missed while Chorus was down would be."""
        grace = timedelta(seconds=self.settings.misfire_grace_s)
        for key, fired_at in list(self._slots_to_retry.items()):
            if self.now() - fired_at > grace:
                del self._slots_to_retry[key]
                await self._record_missed(key, fired_at, "while the database was unavailable")
            else:
                await self.run_slot(key)

    async def _run_slot(self, key: str) -> None:
        row = await self._channel(key)
        if row is None or not row.enabled or row.paused:
            return
        now = self.now()
        slots = self._slots_since(row, now + timedelta(seconds=1))
        done = row.last_slot_at is not None and row.last_slot_at > now  # today's auto drop was posted
        if not slots and (done or await self._handled_recently(row, now)):
            # The job fired for a slot already handled (a leader taking over before APScheduler stored the job's
            # next run time, a clock stepped back, a job re-made for a later hour of a day whose auto drop was
            # posted): a slot made up from the current minute would post a second drop.
            _log.info("drops for %s fired again with no new slot due; nothing to post", key)
            return
        slot = slots[-1] if slots else now.replace(second=0, microsecond=0)
        schedule = schedule_of(row)
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

    async def _handled_recently(self, row: DropChannel, now: datetime) -> bool:
        """Was a scheduled slot of this channel claimed within the misfire grace of `now` (either side)?"""
        grace = timedelta(seconds=self.settings.misfire_grace_s)
        async with self.store.session() as session:
            found = await session.scalar(
                select(DropRun.id)
                .where(
                    DropRun.channel_key == row.key,
                    DropRun.run_key.like(f"{row.key}@%"),
                    DropRun.scheduled_for >= now - grace,
                    DropRun.scheduled_for <= now + grace,
                )
                .limit(1)
            )
        return found is not None

    async def _plan_and_post(self, row: DropChannel, run_id: int, slot: datetime) -> None:
        """Plan the claimed run at the hour it fires (the hour chosen for it), post it, and schedule the next one."""
        key = row.key
        schedule = schedule_of(row)
        # Through UTC: a slot in a spring-forward gap (02:30) is the wall time it really posts at (03:30).
        local = slot.astimezone(UTC).astimezone(schedule.zone)
        if schedule.is_cron and local.hour in quiet_hours(schedule.quiet):
            await self._set_run(run_id, status=SKIPPED, note=QUIET_NOTE)
            return
        # Engagement whose window closed before this slot is learned before this slot chooses; so is a drop whose
        # window closes within the next minutes (yesterday's drop at this hour posted a little after its slot).
        await self.settle_due(channel_key=key, ahead=self._settle_ahead())
        auto = schedule.time == "auto" and not schedule.is_cron
        next_day = datetime(local.year, local.month, local.day, tzinfo=schedule.zone) + timedelta(days=1)
        async with self._planner_lock(key):
            row = await self._channel(key) or row
            planner = await self._planner(row, schedule)
            if not planner.kinds:
                raise _RunUnusable(self._no_kinds_note(row))
            plan = planner.choose(local, hour=local.hour)
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

    def _settle_ahead(self) -> timedelta:
        """How long before its window closes a drop is settled by the next slot of its channel: writing and sending
        a drop takes time, so yesterday's drop at the same hour closes its window just after today's slot fires.
        An hour, or a twelfth of a short window; the engagement of those last minutes is not worth a blind choice."""
        return min(SETTLE_AHEAD, timedelta(hours=self.settings.engagement_window_h) / 12)

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
            repeated = await self._failed_last_time(run, note)
            await self._set_run(run_id, status=FAILED, note=note)
            row = await self._channel(run.channel_key)
            if row is not None and not repeated:
                await self.alert(row, f"A drop for {row.channel} was not posted: {reason}")
            elif repeated:  # told once: the same reason every slot (an hourly cron) would flood the admin channel
                _log.info("drop run %s failed for the same reason as the last one; the admins were told then", run_id)
        except Exception:
            _log.exception("could not record the failure of drop run %s", run_id)

    async def _failed_last_time(self, run: DropRun, note: str) -> bool:
        """Did the channel's previous drop fail with this same note? Then the admins already know."""
        async with self.store.session() as session:
            previous = await session.scalar(
                select(DropRun)
                .where(DropRun.channel_key == run.channel_key, DropRun.id < run.id, DropRun.status != SKIPPED)
                .order_by(DropRun.id.desc())
                .limit(1)
            )
        return previous is not None and previous.status == FAILED and previous.note == note

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
        schedule = schedule_of(row)
        async with self._planner_lock(row.key):
            row = await self._channel(row.key) or row
            planner = await self._planner(row, schedule)
            local = run.scheduled_for.astimezone(schedule.zone)
            fresh = planner.choose(local, hour=local.hour)
            await self._save_channel(row.key, planner=planner.to_state())
        if plan is None:
            note = "planned late: it was interrupted before it was planned"
            plan = dataclasses.replace(fresh, post=True)
        else:
            note = f"the kind {plan.kind!r} is no longer configured, so it became a {fresh.kind}"
            plan = dataclasses.replace(plan, kind=fresh.kind)
        await self._set_run(run.id, plan=plan.as_dict(), note=note)
        await self.alert(row, f"A drop for {row.channel} was repaired: {note}.")
        return plan, note

    async def deliver(self, run_id: int) -> DropRun:
        """Generate (if not yet) and post one run, exactly once: 'posting' before the send, 'posted' after."""
        run = await self._run(run_id)
        assert run is not None
        row = await self._channel(run.channel_key)
        if row is None or run.status in FINAL:
            return run
        if run.status == RETRYING and (not row.enabled or row.paused):
            # A retry never outlives a pause or disable: the moderator (or a lost channel) stopped drops here.
            state = "paused" if row.enabled else "disabled"
            await self._set_run(run_id, status=SKIPPED, note=f"not posted: drops were {state} before its retry")
            return await self._run(run_id) or run
        if self.publisher is None:
            raise UserError("Chorus is not connected to a platform yet, so it cannot post.")
        repaired = ""
        if not run.text or (run.plan or {}).get("kind") not in self._kinds(row):
            # Not written yet, or written as a kind removed since (never sent: its send failed): (re)write it.
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
            message_ref = await self.publisher.publish(conversation_of(row), self._reply(run))
        except Exception as exc:
            if _unanswered(exc):
                return await self._unconfirmed(run, row, exc)
            return await self._failed_attempt(run, row, exc)
        posted = {"status": POSTED, "message_ref": message_ref, "posted_at": self.now(), "note": repaired}
        try:
            await self._record_posted(run_id, run.generation_id, posted)
        except Exception as exc:
            # It is in the channel: never re-sent. The tick stores it (its message id is what engagement needs).
            _log.warning("drop %s was posted as %s but not yet recorded (%s)", run.run_key, message_ref, exc)
            self._unrecorded[run_id] = (run.generation_id, posted)
            return run
        _log.info("posted drop %s as %s", run.run_key, message_ref)
        return await self._run(run_id) or run

    async def _record_posted(self, run_id: int, generation_id: int | None, posted: dict[str, Any]) -> None:
        await self._set_run(run_id, **posted)
        if generation_id is not None and posted["message_ref"]:
            await self.store.set_message_ref(generation_id, posted["message_ref"])

    async def record_unrecorded(self) -> None:
        """Store the runs that were posted while the database could not take it (see deliver)."""
        for run_id, (generation_id, posted) in list(self._unrecorded.items()):
            await self._record_posted(run_id, generation_id, posted)
            del self._unrecorded[run_id]

    async def _unconfirmed(self, run: DropRun, row: DropChannel, exc: BaseException) -> DropRun:
        """The send timed out: the platform may have posted it, so (as after a crash mid-send) it is not re-sent."""
        await self._set_run(run.id, status=UNCONFIRMED, note=UNANSWERED_NOTE)
        _log.warning("drop %s got no answer (%r); marked unconfirmed", run.run_key, exc)
        await self.alert(row, f"A drop for {row.channel} got no answer from the platform: it may have been posted.")
        return await self._run(run.id) or run

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
            delay = retry_delay_s(attempts, self.settings.retry_base_s, exc)
            await self._set_run(
                run.id,
                status=RETRYING,
                attempts=attempts,
                next_attempt_at=self.now() + timedelta(seconds=delay),
                note=f"attempt {attempts} failed: {reason}; retrying in {delay:.0f} s",
            )
        _log.warning("drop %s attempt %d failed: %s", run.run_key, attempts, reason)
        return await self._run(run.id) or run

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
        event = Command(conversation=conversation_of(row), user=DROPS_USER, name="drops")
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
                try:
                    vector = list((await self.chorus.embedder.embed([text]))[0])
                except GenerationError as exc:  # only the repeat check needs it: post without, never stop drops
                    _log.warning("drop for %s not checked for repeats: %s", row.key, exc)
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
            ReplyAction(RATE_UP, "👍", "+", value="+1", target_id=run.generation_id),
            ReplyAction(RATE_DOWN, "👎", "-", value="-1", target_id=run.generation_id),
        )
        footer = "React, reply or rate it: drops learn what this channel enjoys."
        return Reply(
            parts=(run.text,), title=run.title, footer=footer, actions=actions, generation_id=run.generation_id
        )

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

    async def post_now(self, conversation: Conversation, user: User) -> str:
        row = await self._require(conversation)
        schedule = schedule_of(row)
        now = self.now()
        async with self._planner_lock(row.key):
            row = await self._channel(row.key) or row
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
        if run.status == POSTED or run.id in self._unrecorded:
            return f"Posted a {plan.kind} ({plan.tone}, about {plan.topic})."
        return f"Could not post the drop: {(run.note or run.status).rstrip('.')}."
