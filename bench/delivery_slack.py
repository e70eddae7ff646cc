"""Slack delivery under Slack's rate limits: N people run `/create` at once in one channel.

The fake Slack (tests/fake_slack.py) enforces Slack's documented limits (RateModel: one message a second per
channel with short bursts, chat.update at Tier 3 = 50 a minute per workspace, and so on), answers a call over them
with 429 + Retry-After and counts it as a violation; it also refuses messages over Block Kit's limits. The N
commands arrive at once, as signed HTTP requests or as Socket Mode envelopes, from N different users. The model is
a FakeGenerator (60 words, 50 ms a word), so what is measured is delivery, not generation.

Per run: how many results were delivered complete (the final message, with its buttons and every word, in Slack
and stored as that result's message), p50/p99 time from the command to its final text, the 429s Chorus caused by
breaking a limit, and messages Slack refused. Targets: every result delivered at N = 30 and N = 100, no violation.

Run:  .venv/bin/python bench/delivery_slack.py [--n 30 100] [--scale 1.0] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import tempfile
import time
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

RESULT_NAME = "delivery-slack-cpu-2core"
WORDS = 60
WORD_DELAY_S = 0.05
CHANNEL = "C0GENERAL"
MODES = ("http", "socket")


def _script(request: Any) -> str:
    """`tag<i>` (from the command's "stall <i>") then 60 words, so each final message names its command."""
    found = re.search(r"stall (\d+)", " ".join(message.content for message in request.messages))
    tag = f"tag{found.group(1)}" if found else "tag?"
    return tag + " " + " ".join(f"word{i}" for i in range(WORDS))


def _texts(blocks: list[dict[str, Any]]) -> str:
    found: list[str] = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        for element in block.get("elements", []):
            if isinstance(element.get("text"), str):
                found.append(element["text"])
    return "\n".join(found)


def _has_actions(body: dict[str, Any]) -> bool:
    return any(block.get("type") == "actions" for block in body.get("blocks") or [])


async def _measure(n: int, mode: str, scale: float, edit_interval_s: float) -> dict[str, Any]:
    import aiohttp
    from fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, RateModel, form, sign, slash_body

    from adapters.slack.app import SlackAdapter
    from adapters.slack.outbound import SlackLimits
    from bots.store import Store
    from chorus.compose import build_chorus
    from config import load_settings
    from generation.fake import FakeGenerator

    fake = FakeSlack(RateModel(scale=scale))
    await fake.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            env={
                "CHORUS_HOME": tmp,
                "CHORUS_MODEL__SOURCE": "fake",
                "CHORUS_SLACK__MODE": mode,
                "CHORUS_SLACK__API_BASE_URL": fake.api_url,
                "CHORUS_SLACK__HOST": "127.0.0.1",
                "CHORUS_SLACK__PORT": "0",
                "CHORUS_LIMITS__STREAM_EDIT_INTERVAL_S": str(edit_interval_s),
            }
        )
        store = Store(settings.store_url)
        await store.start()
        chorus = build_chorus(settings, store, FakeGenerator(_script, delay_s=WORD_DELAY_S), drops=False)
        secrets = {
            "CHORUS_SLACK_BOT_TOKEN": BOT_TOKEN,
            "CHORUS_SLACK_APP_TOKEN": APP_TOKEN,
            "CHORUS_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        }
        adapter = SlackAdapter(chorus, env=secrets, limits=SlackLimits(scale=scale))
        await adapter.start()
        commands = [slash_body("/create", f"slogan stall {i}", user=f"U{i:08d}", channel=CHANNEL) for i in range(n)]
        http = aiohttp.ClientSession() if mode == "http" else None
        try:
            started = time.monotonic()
            if http is not None:
                url = f"http://127.0.0.1:{adapter.port}/slack/events"

                async def post(body: dict[str, Any]) -> None:
                    raw = form(body)
                    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(raw)}
                    async with http.post(url, data=raw.encode(), headers=headers) as response:
                        assert response.status == 200, response.status

                await asyncio.gather(*(post(command) for command in commands))
            else:
                await fake.wait_connected()
                await fake.push_many("slash_commands", commands)
            # Done when every handler has finished (delivered or given up), bounded by Slack's pace and a margin.
            deadline = time.monotonic() + (3 * n + 120) * scale + 30
            await asyncio.sleep(0.5)  # the adapter starts a burst's work once the burst is over
            while adapter.tasks and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait(set(adapter.tasks), timeout=left)
            timed_out = bool(adapter.tasks)
            finished: dict[str, float] = {}
            for call in fake.calls:
                if (
                    call.method in ("chat.postMessage", "chat.update")
                    and call.response.get("ok")
                    and _has_actions(call.body)
                ):
                    for tag in re.findall(r"tag(\d+)", _texts(call.body["blocks"])):
                        finished.setdefault(tag, call.at - started)
            complete = 0
            for (channel, ts), message in fake.messages.items():
                record = await store.find_by_message_ref("slack", f"{channel}:{ts}")
                if record is None or not _has_actions(message) or not record.variants:
                    continue
                text = _texts(message.get("blocks") or [])
                complete += all(variant.split()[-1] in text for variant in record.variants)
            times = sorted(finished.values())
            return {
                "platform": "slack",
                "mode": mode,
                "n": n,
                "delivered": complete,
                "delivered_pct": round(100 * complete / n, 1),
                "p50_final_s": round(percentile(times, 50), 2) if times else None,
                "p99_final_s": round(percentile(times, 99), 2) if times else None,
                "violations": len(fake.violations),
                "refused": len(fake.refused),
                "posts": len(fake.calls_to("chat.postMessage")),
                "updates": len(fake.calls_to("chat.update")),
                "timed_out": timed_out,
            }
        finally:
            for task in list(adapter.tasks):
                task.cancel()
            await adapter.stop()
            if http is not None:
                await http.close()
            await chorus.close()
            await fake.close()


async def run(n: int, mode: str, *, scale: float = 1.0, edit_interval_s: float = 1.0) -> list[dict]:
    """One row: N simultaneous `/create` in one channel over `mode` ("http" or "socket"), under Slack's limits on
    a clock `scale` times Slack's (1.0: real time)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    return [await _measure(n, mode, scale, edit_interval_s)]


def markdown(rows: list[dict], machine: dict[str, Any], scale: float) -> str:
    clock = "Slack's real limits, real time" if scale == 1 else f"Slack's limits on a clock {1 / scale:g}× faster"
    lines = [
        "### Slack delivery: N simultaneous /create in one channel",
        "",
        f"{machine['cpu_model'] or 'CPU'}, {machine['os_cpu_count']} CPUs (2-core shared VM, loaded by other work); "
        f"Python {machine['python']}; commit {(machine['git_commit'] or 'unknown')[:12]}; {machine['date']}. "
        f"Fake Slack enforcing {clock}: 1 message/s per channel (bursts of 2), chat.update Tier 3 (50/min), "
        f"Block Kit limits. FakeGenerator: {WORDS} words, {WORD_DELAY_S * 1000:.0f} ms a word. "
        "Targets: 100% delivered, 0 violations.",
        "",
        "| Mode | N | Delivered complete | p50 to final (s) | p99 to final (s) | Limit violations (429) "
        "| Refused (Block Kit) | postMessage / update calls |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        mode = "HTTP (signed requests)" if row["mode"] == "http" else "Socket Mode"
        lines.append(
            f"| {mode} | {row['n']} | {row['delivered']}/{row['n']} ({row['delivered_pct']}%) | {row['p50_final_s']} "
            f"| {row['p99_final_s']} | {row['violations']} | {row['refused']} | {row['posts']} / {row['updates']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[30, 100])
    parser.add_argument("--mode", choices=MODES, nargs="+", default=list(MODES))
    parser.add_argument("--scale", type=float, default=1.0, help="real seconds per Slack second (1.0: real time)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--name", default=RESULT_NAME)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    machine = machine_info()

    async def everything() -> list[dict]:
        return [row for n in args.n for mode in args.mode for row in await run(n, mode, scale=args.scale)]

    rows = asyncio.run(everything())
    table = markdown(rows, machine, args.scale)
    print(table)
    write_results(args.out_dir, args.name, table, {"machine": machine, "scale": args.scale, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
