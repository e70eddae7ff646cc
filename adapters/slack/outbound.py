"""Every Web API call Chorus makes, paced to Slack's documented limits, with final results first.

Slack allows about one new message a second per channel (chat.postMessage) and, per workspace, a number of calls a
minute by each method's tier (chat.update is Tier 3: 50 a minute). A burst of 30 `/create`s in one channel is far
over both, so calls wait their turn here instead of being sent and refused: each limit is a token bucket with a
queue in front, ordered final results, then new messages, then progress edits. A 429 pauses that bucket for
Retry-After and the call queues again, so a final result is retried until Slack takes it or its patience runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

if TYPE_CHECKING:
    from adapters.slack.responder import SlackStream

_log = logging.getLogger(__name__)

# docs.slack.dev/apis/web-api/rate-limits: calls a minute per method per workspace, by tier.
TIER_PER_MINUTE = {2: 20, 3: 50, 4: 100}
METHOD_TIERS: Mapping[str, int] = {
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.appendStream": 4,
    "chat.stopStream": 4,
    "views.open": 4,
    "views.publish": 4,
    "users.info": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}
# Methods that post a new message: one a second per channel.
PER_CHANNEL = frozenset({"chat.postMessage", "chat.startStream"})
CLIENTS_KEPT = 256  # clients without slack_sdk's 429 retries, one per workspace token


class Priority(IntEnum):
    """Who goes first when a limit is reached: what the user is waiting for, then new messages, then progress."""

    FINAL = 0
    POST = 1
    PROGRESS = 2


@dataclass(frozen=True)
class SlackLimits:
    """The limits Chorus keeps to, a little under Slack's so that timing jitter never crosses them.

    `scale` is real seconds per Slack second: tests run Slack's clock faster (0.05) on both sides, Retry-After
    included. `final_patience_s` is how long (in Slack seconds) Slack may keep refusing a final edit with 429s
    before the result is posted as a new message instead.
    """

    scale: float = 1.0
    headroom: float = 0.9  # the fraction of each documented rate Chorus uses
    tier_burst: float = 2.0  # calls a tier's bucket lets through at once
    final_patience_s: float = 30.0

    def bucket(self, method: str) -> TokenBucket | None:
        if method in PER_CHANNEL:
            return TokenBucket(rate=self.headroom / self.scale, capacity=1.0)
        tier = METHOD_TIERS.get(method)
        if tier is None:
            return None
        return TokenBucket(rate=TIER_PER_MINUTE[tier] / 60 * self.headroom / self.scale, capacity=self.tier_burst)


@dataclass
class TokenBucket:
    """`capacity` calls at once, refilled at `rate` a second; `paused_until` holds it shut after a 429."""

    rate: float
    capacity: float
    tokens: float = field(init=False)
    at: float = field(init=False)
    paused_until: float = 0.0

    def __post_init__(self) -> None:
        self.tokens, self.at = self.capacity, asyncio.get_running_loop().time()

    def wait_s(self, now: float) -> float:
        """Seconds until a call may go (0: now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if now < self.paused_until:
            return self.paused_until - now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class RateLimited(Exception):
    """Slack kept answering 429 past a call's patience."""

    def __init__(self, method: str, error: SlackApiError) -> None:
        super().__init__(f"{method} was still rate limited")
        self.method = method
        self.error = error

    @property
    def retry_after_s(self) -> float | None:
        """Slack's last Retry-After, so whoever retries the call later waits at least that long."""
        return retry_after_s(self.error)


class _Lane:
    """One limit: its bucket and the calls queued for it, best priority first, then in arrival order."""

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.queue: list[tuple[int, int]] = []
        self.changed = asyncio.Condition()

    async def turn(self, ticket: tuple[int, int]) -> None:
        loop = asyncio.get_running_loop()
        async with self.changed:
            heapq.heappush(self.queue, ticket)
            try:
                while True:
                    if self.queue[0] == ticket:
                        wait = self.bucket.wait_s(loop.time())
                        if wait <= 0:
                            heapq.heappop(self.queue)
                            self.bucket.tokens -= 1
                            self.changed.notify_all()
                            return
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.changed.wait(), wait)
                    else:
                        await self.changed.wait()
            except BaseException:
                if ticket in self.queue:
                    self.queue.remove(ticket)
                    heapq.heapify(self.queue)
                    self.changed.notify_all()
                raise

    async def pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.bucket.paused_until = max(self.bucket.paused_until, loop.time() + seconds)
        async with self.changed:
            self.changed.notify_all()


class Outbound:
    """Paces and sends Chorus' Web API calls; one per adapter, shared by every responder and the Publisher."""

    def __init__(self, limits: SlackLimits | None = None) -> None:
        self.limits = limits or SlackLimits()
        self._lanes: dict[tuple[str, ...], _Lane] = {}
        self._order = itertools.count()
        self._quiet: OrderedDict[tuple[str | None, str], AsyncWebClient] = OrderedDict()
        # Streams not yet finished, so that a shutdown can finish them (SlackStream.interrupt).
        self.streams: set[SlackStream] = set()
        self.stopping = False  # set by the adapter's stop: streams cut short then say that Chorus restarted

    def quiet(self, client: AsyncWebClient) -> AsyncWebClient:
        """`client` without slack_sdk's own 429 retries (which sleep outside the pacing and give up after five):
        same token, base URL and HTTP session; here a 429 pauses the lane and the call queues again."""
        key = (client.token, client.base_url)
        twin = self._quiet.get(key)
        if twin is None or twin.session is not client.session:
            twin = AsyncWebClient(
                token=client.token,
                base_url=client.base_url,
                timeout=client.timeout,
                session=client.session,
                retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2)],
            )
            self._quiet[key] = twin
            if len(self._quiet) > CLIENTS_KEPT:
                self._quiet.popitem(last=False)
        self._quiet.move_to_end(key)
        return twin

    def _lane(self, method: str, team: str, channel: str) -> _Lane | None:
        key = (method, team, channel) if method in PER_CHANNEL else (method, team)
        lane = self._lanes.get(key)
        if lane is None:
            bucket = self.limits.bucket(method)
            if bucket is None:
                return None
            lane = self._lanes[key] = _Lane(bucket)
        return lane

    def waiting(self) -> int:
        """Calls queued behind a limit right now, across every lane."""
        return sum(len(lane.queue) for lane in self._lanes.values())

    async def turn(self, method: str, team: str, channel: str, priority: Priority) -> None:
        """Wait until `method` may be called in that workspace and channel; cancelling gives the place up."""
        lane = self._lane(method, team, channel)
        if lane is not None:
            await lane.turn((int(priority), next(self._order)))

    async def attempt(self, client: AsyncWebClient, method: str, team: str, **kwargs: Any) -> AsyncSlackResponse:
        """One call, once its turn has come. A 429 pauses the lane for Retry-After and is raised."""
        try:
            return await getattr(client, method.replace(".", "_"))(**kwargs)
        except SlackApiError as exc:
            retry_after = retry_after_s(exc)
            if retry_after is not None:
                lane = self._lane(method, team, str(kwargs.get("channel") or ""))
                if lane is not None:
                    await lane.pause(retry_after * self.limits.scale)
                else:
                    await asyncio.sleep(retry_after * self.limits.scale)
            raise

    async def send(
        self,
        client: AsyncWebClient,
        method: str,
        *,
        team: str,
        priority: Priority = Priority.FINAL,
        patience_s: float | None = None,
        **kwargs: Any,
    ) -> AsyncSlackResponse:
        """Call `method` when Slack's limits allow; retry 429s until Slack has refused it for `patience_s` Slack
        seconds (default: `limits.final_patience_s`), then raise RateLimited. Other errors are raised at once."""
        patience = (self.limits.final_patience_s if patience_s is None else patience_s) * self.limits.scale
        loop = asyncio.get_running_loop()
        first_refusal: float | None = None
        channel = str(kwargs.get("channel") or "")
        while True:
            await self.turn(method, team, channel, priority)
            try:
                return await self.attempt(client, method, team, **kwargs)
            except SlackApiError as exc:
                if retry_after_s(exc) is None:
                    raise
                now = loop.time()
                first_refusal = now if first_refusal is None else first_refusal
                if now - first_refusal >= patience:
                    raise RateLimited(method, exc) from exc
                _log.info("%s rate limited; trying again after Retry-After", method)


def retry_after_s(exc: SlackApiError) -> float | None:
    """Slack seconds to wait when `exc` is a 429 (Retry-After, 1 when missing); None for any other error."""
    response = exc.response
    if response is None or response.status_code != 429:
        return None
    headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
    value = headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
