"""Results that were generated and stored but never reached their channel (the process died while delivering
them) are posted when Chorus is back.

A stored result without a message ref was never delivered: the studio saves the ref as soon as the platform has
the message. An adapter calls `deliver_undelivered` once it can post again; each such result from the last
`REDELIVERY_WINDOW` is posted to its conversation, with its buttons, and its ref saved, so it is posted once.
Each result is claimed in the store before it is posted, so several workers starting at once on one store (Slack
HTTP mode behind a load balancer) post it once between them. A result whose half-written message is still recorded
in flight is left to bots/inflight.py, which shows it in that message (or leaves it to its live owner).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from bots.feedback import result_actions
from bots.reply import Publisher, PublishForbidden, Reply
from bots.store import Generation, GenerationRecord, InFlightGeneration, Store

if TYPE_CHECKING:
    from bots.events import Conversation

_log = logging.getLogger(__name__)

# Older results are not posted out of the blue: nobody is waiting for them any more.
REDELIVERY_WINDOW = timedelta(minutes=30)
# Results written for a feature that posts them itself, when it chooses (scheduled drops): never redelivered here.
FEATURE_USERS = frozenset({"chorus-drops"})
NOTE = "Delivered after a restart."


async def undelivered(
    store: Store, platform: str, *, window: timedelta = REDELIVERY_WINDOW, until: datetime | None = None
) -> list[GenerationRecord]:
    """Stored results on `platform` from the last `window` (created before `until`) that have no message ref,
    oldest first."""
    until = until or datetime.now(UTC)
    since = until - window
    async with store.session() as session:
        ids = await session.scalars(
            select(Generation.id)
            .where(
                Generation.platform == platform,
                Generation.message_ref.is_(None),
                Generation.status.in_(("ok", "partial")),
                Generation.created_at >= since,
                Generation.created_at < until,
                Generation.user_id.not_in(FEATURE_USERS),
                Generation.id.not_in(
                    select(InFlightGeneration.generation_id).where(InFlightGeneration.generation_id.is_not(None))
                ),
            )
            .order_by(Generation.id)
        )
        wanted = list(ids)
    records = [await store.get_generation(generation_id) for generation_id in wanted]
    return [record for record in records if record is not None]


def reply_for(record: GenerationRecord) -> Reply:
    """The result as it would have been shown, with its buttons and a note saying why it arrives now."""
    title = f"{record.kind} · v{record.version}"
    if record.instruction:
        title += f" · {record.instruction}"
    return Reply(
        parts=record.variants,
        title=title,
        footer=NOTE,
        actions=result_actions(record.id),
        generation_id=record.id,
    )


# The ref of a result being redelivered, and of one that cannot be: never matched by a platform message id.
CLAIMED = ""


async def claim(store: Store, generation_id: int) -> bool:
    """Mark a result as being redelivered, unless it was delivered or claimed meanwhile; True if this caller won."""
    async with store.session() as session, session.begin():
        result = await session.execute(
            update(Generation)
            .where(Generation.id == generation_id, Generation.message_ref.is_(None))
            .values(message_ref=CLAIMED)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release(store: Store, generation_id: int) -> None:
    """Give a claimed result back, so the next start tries again."""
    async with store.session() as session, session.begin():
        await session.execute(
            update(Generation)
            .where(Generation.id == generation_id, Generation.message_ref == CLAIMED)
            .values(message_ref=None)
        )


async def deliver_undelivered(store: Store, publisher: Publisher, platform: str, *, started: datetime) -> int:
    """Post every undelivered recent result on `platform` to its conversation; returns how many were posted.
    `started`: when this process began taking work. Results created since are its own, still being delivered."""
    posted = 0
    for record in await undelivered(store, platform, until=started):
        conversation: Conversation = record.conversation
        if not await claim(store, record.id):
            continue  # delivered, or taken by another worker, since it was listed
        try:
            message_ref = await publisher.publish(conversation, reply_for(record))
        except PublishForbidden as exc:
            _log.warning("cannot redeliver generation %s: %s", record.id, exc)
            continue  # stays claimed: not retried at every start
        except Exception:
            _log.exception("redelivering generation %s failed; it is retried at the next start", record.id)
            await release(store, record.id)
            continue
        except asyncio.CancelledError:  # a stop cut it short: the next start posts it
            await release(store, record.id)
            raise
        await store.set_message_ref(record.id, message_ref)
        posted += 1
    if posted:
        _log.info("delivered %d result(s) that were ready when Chorus stopped", posted)
    return posted
