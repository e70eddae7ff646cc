"""Does every result arrive? N simultaneous `/create` in one Discord channel, under modelled rate limits.

The real discord.py client and all of Chorus (router, studio, store, Discord adapter) run against the fake Discord
of tests/fake_discord.py with its rate-limit buckets on (5 requests per 2 s per interaction token, 5 per 5 s per
channel for bot-token messages, announced in X-RateLimit-* headers; a request into an empty bucket is a
violation, answered 429). Generation is the FakeGenerator at 50 ms a word, so the figures are about delivery, not
the model. Modes:

- `buckets`: the limits alone;
- `buckets+storm`: also, for every 10th interaction, every edit of its response is refused with 429 (Retry-After
  0.05 s) for good, so its result has to arrive another way.

For each interaction: delivered complete means the message the user sees (what the stored message ref points at,
never deleted, not still "thinking…") carries the whole final text and the buttons. Time to final text runs from the
INTERACTION_CREATE frame to the moment the result's buttons are on screen, polled every 10 ms on the fake;
completeness is checked once at the end against the store. The fake runs in Chorus' process and event
loop (it is cheap next to discord.py), on a shared, loaded 2-core VM: times are indicative.

Run:  .venv/bin/python bench/delivery_discord.py [--n 30,100] [--modes buckets,buckets+storm] [--out-dir bench/results]
A combined bench (Discord and Slack) calls `run(n)` for these rows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
# bench/generation.py would shadow the `generation` package: the repository root first, bench/ and tests/ last.
sys.path[:] = [
    str(REPO_ROOT),
    *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR),
    str(BENCH_DIR),
    str(REPO_ROOT / "tests"),
]

from local_generator import machine_info, percentile, write_results  # noqa: E402

_log = logging.getLogger(__name__)

MODES = ("buckets", "buckets+storm")
STORM_EVERY = 10
WORD_DELAY_S = 0.05
DEADLINE_S = 180.0


def _shown(fake: Any, token: str) -> bool:
    candidates = [fake.originals.get(token), *fake.followups.get(token, ())]
    return any(fake.messages.get(message_id, {}).get("components") for message_id in candidates if message_id)


def _complete(fake: Any, message_id: str | None, text: str) -> bool:
    message = fake.messages.get(message_id) if message_id else None
    if message is None or not message.get("components") or int(message.get("flags") or 0) & 128:
        return False
    description = "".join(str(embed.get("description") or "") for embed in message.get("embeds") or [])
    return text in description


async def run_mode(n: int, mode: str) -> dict[str, Any]:
    from fake_discord import FakeDiscord, RateLimits, interaction_payload, snowflake
    from sqlalchemy import select

    from adapters.discord.app import DiscordAdapter, apply_endpoints
    from bots.store import Generation, Store
    from chorus.compose import build_chorus
    from config import load_settings
    from generation.fake import FakeGenerator

    fake = FakeDiscord()
    await fake.start()
    fake.limits = RateLimits()
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(
            env={
                "CHORUS_HOME": home,
                "CHORUS_MODEL__SOURCE": "fake",
                "CHORUS_CHORUS__PLATFORM": "discord",
                **fake.env(),
            }
        )
        store = Store(settings.store_url)
        await store.start()
        chorus = build_chorus(settings, store, FakeGenerator(delay_s=WORD_DELAY_S), drops=False)
        apply_endpoints(settings)
        adapter = DiscordAdapter(chorus, client_options={"guild_ready_timeout": 0.05})
        runner = asyncio.create_task(adapter.run("bench-token"))
        try:
            await fake.wait_connected()
            await asyncio.wait_for(adapter.client.wait_until_ready(), 30)
            payloads = []
            for index in range(n):
                data = {
                    "id": snowflake(),
                    "name": "create",
                    "type": 1,
                    "options": [
                        {"name": "kind", "type": 3, "value": "tweet"},
                        {"name": "prompt", "type": 3, "value": f"launch number {index} of a tea shop"},
                    ],
                }
                payload = interaction_payload(2, data, user=(str(960000000000000000 + index), f"user{index}"))
                payloads.append(payload)
                if mode == "buckets+storm" and index % STORM_EVERY == 0:
                    fake.fail("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", times=10**9)
            started = time.monotonic()
            for payload in payloads:
                await fake.dispatch("INTERACTION_CREATE", payload)
            # Shown: a message of the interaction (its response or a follow-up) carries the buttons, which only a
            # finished result has. Polled on the fake alone, so the store is not read while 2N handlers write to it.
            done_at: dict[str, float] = {}
            while len(done_at) < n and time.monotonic() - started < DEADLINE_S:
                for payload in payloads:
                    if payload["id"] not in done_at and _shown(fake, payload["token"]):
                        done_at[payload["id"]] = time.monotonic() - started
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # the message refs are stored just after delivery
            # Complete: the stored ref points at a live message with the whole final text and the buttons.
            by_user = {payload["member"]["user"]["id"]: payload for payload in payloads}
            async with store.session() as session:
                records = list((await session.execute(select(Generation))).scalars())
            complete = {
                by_user[record.user_id]["id"]
                for record in records
                if record.user_id in by_user and _complete(fake, record.message_ref, record.variants[0])
            }
            done_at = {key: value for key, value in done_at.items() if key in complete}
            times = sorted(done_at.values())
            left_thinking = sum(1 for payload in payloads if payload["token"] in fake.loading)
            follow_ups = len(fake.find("POST", r"/webhooks/\d+/[^/]+$"))
            return {
                "platform": "discord",
                "mode": mode,
                "n": n,
                "delivered": len(done_at),
                "delivered_pct": round(100 * len(done_at) / n, 1),
                "p50_s": round(percentile(times, 50), 2) if times else None,
                "p99_s": round(percentile(times, 99), 2) if times else None,
                "violations": len(fake.violations),
                "left_thinking": left_thinking,
                "follow_ups": follow_ups,
                "requests": len(fake.requests),
            }
        finally:
            await adapter.stop()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await chorus.close()
            await fake.stop()


async def run(n: int, modes: tuple[str, ...] = MODES) -> list[dict]:
    """Rows, one per mode: platform, mode, n, delivered (complete), p50_s/p99_s to the final text, violations."""
    return [await run_mode(n, mode) for mode in modes]


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        f"Delivery under rate limits — Discord, {machine.get('cpu_model') or 'CPU'}, {os.cpu_count()} cores "
        f"(shared VM, loaded: load average {os.getloadavg()[0]:.1f}), {datetime.now(UTC):%Y-%m-%d}. "
        "Target: 100% delivered complete, zero limit violations.",
        "",
        "| platform | mode | n | delivered | p50 s | p99 s | violations | left thinking | follow-ups |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['platform']} | {row['mode']} | {row['n']} | {row['delivered']} ({row['delivered_pct']}%) | "
            f"{row['p50_s']} | {row['p99_s']} | {row['violations']} | {row['left_thinking']} | {row['follow_ups']} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    modes = tuple(mode for mode in args.modes.split(",") if mode)
    rows: list[dict[str, Any]] = []
    for n in (int(value) for value in args.n.split(",")):
        rows += await run(n, modes)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="30,100", help="comma-separated burst sizes")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out-dir", default=str(BENCH_DIR / "results"))
    parser.add_argument("--name", default="delivery-discord-cpu-2core")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rows = asyncio.run(main_async(args))
    machine = machine_info()
    table = markdown(rows, machine)
    print(table)
    machine["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine, "rows": rows}
    write_results(Path(args.out_dir), args.name, table, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
