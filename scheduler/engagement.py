"""Engagement settlement and channel activity: reactions, replies and clicks on a drop become its reward when its
window closes, and the channel's planner learns from it; messages are counted per hour (never stored as text).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from bots.actions import RATE_DOWN, RATE_UP
from bots.events import Action, Activity, Command, Conversation, Message, plain_emoji
from bots.reply import Reply
from bots.router import Context, Handler
from bots.store import EngagementEvent
from scheduler.core import DROPS_USER, DropsCore, conversation_of
from scheduler.models import POSTED, DropActivity, DropRun
from scheduler.planner import DropPlan, Engagement, engagement_reward

_log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-zà-ÿ]{5,}")
_STOPWORD_TEXT = (
    "about above after again against because before being below between could doing during every further "
    "having their there these those through under until which while would yours yourself really think thing "
    "things people still right going gonna wanna maybe might should where thanks today tomorrow yesterday "
    "other another something anything nothing everyone someone great little never always since"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WEEK0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: hour_of_week 0


class EngagementSettlement(DropsCore):
    """Engagement counted, settled into rewards, and channel activity recorded."""

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
                # A removal is stored as "-<emoji>"; adapters hand over Unicode emoji, compared in plain_emoji form
                # (so a ❤️ stored with its variation selector, as earlier versions did, still weighs as ❤).
                removed = event.value.startswith("-")
                reactions[plain_emoji(event.value[1:] if removed else event.value)] += -1 if removed else 1
            elif event.kind == "reply":
                replies += 1
            elif event.kind == "click":
                up += event.value == "+1"
                down += event.value == "-1"
        return Engagement(
            reactions={k: v for k, v in reactions.items() if v > 0}, replies=replies, clicks_up=up, clicks_down=down
        )

    @property
    def reaction_weights(self) -> dict[str, float]:
        """The configured weights keyed as reactions arrive (❤️ in a setting counts ❤ reactions)."""
        return {plain_emoji(emoji): weight for emoji, weight in self.settings.reaction_weights.items()}

    def reward(self, engagement: Engagement) -> float:
        return engagement_reward(
            engagement,
            self.reaction_weights,
            reply_weight=self.settings.reply_weight,
            click_weight=self.settings.click_weight,
        )

    async def settle_due(self, channel_key: str | None = None, *, ahead: timedelta = timedelta(0)) -> int:
        """Drops whose engagement window closed (or closes within `ahead`) become rewards for their channel's
        planner (one channel's, or all). Each drop is learned from once, even when a slot and the tick settle it at
        the same moment; a channel whose planner is busy choosing is settled at the next call. A run that cannot be
        learned from is still settled, with its reward, so it is not tried again."""
        cutoff = self.now() + ahead - timedelta(hours=self.settings.engagement_window_h)
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
            lock = self._planner_lock(run.channel_key)
            if lock.locked():
                continue
            async with lock:
                if not await self._mark_settled(run.id, reward, engagement):
                    continue  # settled meanwhile (by a slot of its channel, or the tick)
                try:
                    await self._learn(run, engagement, reward)
                except Exception:
                    _log.exception("drop %s: its engagement could not be learned from", run.run_key)
            settled += 1
        return settled

    async def _mark_settled(self, run_id: int, reward: float, engagement: Engagement) -> bool:
        """Mark a run settled unless it already is; True when this call did it (and so learns from it)."""
        async with self.store.session() as session, session.begin():
            done = await session.execute(
                update(DropRun)
                .where(DropRun.id == run_id, DropRun.settled.is_(False))
                .values(settled=True, reward=reward, engagement=dataclasses.asdict(engagement))
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def _learn(self, run: DropRun, engagement: Engagement, reward: float) -> None:
        row = await self._channel(run.channel_key)
        if row is None or not run.plan:
            return
        planner = self._stored_planner(row)
        planner.activity = await self.activity_matrix(conversation_of(row), row.tz)
        planner.observe(
            DropPlan.from_dict(run.plan),
            engagement,
            reaction_weights=self.reaction_weights,
            reward=reward,
        )
        await self._save_channel(row.key, planner=planner.to_state())

    def count_activity(self, conversation: Conversation, at: datetime, text: str = "") -> None:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        hour_of_week = int((at.astimezone(UTC) - _WEEK0).total_seconds() // 3600) % 168
        self._activity[(conversation.platform, conversation.workspace, conversation.channel, hour_of_week)] += 1
        key = Conversation(conversation.platform, conversation.workspace, conversation.channel).key
        if text and key in self._learning:
            words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
            self._mined.setdefault(key, Counter()).update(words)

    async def flush_activity(self) -> None:
        """Write the buffered counts (one row per channel and hour of the week). One flush at a time: a caller that
        finds one under way waits for it, so what was counted before the call is stored when it returns."""
        if not self._tables_ready:
            return
        async with self._flush_lock:
            await self._flush_activity()

    async def _flush_activity(self) -> None:
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
        await self._load_learning()

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
        generation_id = action.target_id
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
