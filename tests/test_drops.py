"""Scheduled drops end to end: the composition root wires the service into the terminal; without a scheduler
the commands say so."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from drops_support import Clock, Drops, drops_settings, start_drops

from support import make_bot, reply_text, settings_for


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


async def test_without_a_scheduler_drops_say_so(tmp_path: Path) -> None:
    # An in-memory store cannot hold the job store, so the drops plug-in installs without its scheduler.
    bot = await make_bot(settings_for(tmp_path, CHORUS_STORE__URL="sqlite+aiosqlite://"), drops=True)
    try:
        [reply] = await bot.say("/drops status")
        assert reply.ephemeral and "not running" in reply_text(reply)
    finally:
        await bot.chorus.close()


def test_chorus_run_wires_drops_into_the_terminal(tmp_path: Path) -> None:
    """The composition root attaches the service: a piped terminal session enables, posts, and saves /stats."""
    script = "/drops enable --kinds question --tz Europe/Berlin\n/drops now\n/drops status\n/stats\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"}
    result = subprocess.run(
        [sys.executable, "-m", "chorus", "run"], input=script, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Drops are on here: daily at the busiest hour (auto) Europe/Berlin" in out
    assert "[terminal] ── Question · " in out and "Posted a question" in out
    assert "Recent:" in out and "posted, engagement still counting" in out
    saved = [line.split(" saved to ", 1)[1] for line in out.splitlines() if " saved to " in line]
    assert len(saved) == 1 and Path(saved[0]).read_bytes()[:4] == b"\x89PNG"
