"""Drops on one shared Postgres: exactly one process runs the scheduler, another takes over when it dies, and a
slot fired by two processes posts once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from drops_support import Clock, RecordingPublisher

import scheduler.models  # noqa: F401  (registers the drops tables on Base)
from adapters.terminal.translate import CONVERSATION
from scheduler.service import DropsService
from support import make_bot, settings_for, wait_for

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("drops_leader_worker.py")
STATE = re.compile(rb"state leader=(\d) scheduler=(\d) attempts=(\d+)")


class Worker:
    """A bot process and the last state line it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.leader = self.scheduler = False
        self.attempts = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            match = STATE.search(line)
            if match:
                self.leader, self.scheduler = match.group(1) == b"1", match.group(2) == b"1"
                self.attempts = int(match.group(3))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


async def _spawn(home: Path, url: str) -> Worker:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        url,
        str(home),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return Worker(process)


@pytest.fixture
async def workers(postgres_url: str) -> AsyncIterator[list[Worker]]:
    spawned: list[Worker] = []
    yield spawned
    for worker in spawned:
        await worker.stop()


async def test_one_leader_runs_the_scheduler_and_another_takes_over_when_it_dies(
    workers: list[Worker], tmp_path: Path, postgres_url: str
) -> None:
    first = await _spawn(tmp_path / "a", postgres_url)
    workers.append(first)
    await wait_for(lambda: first.leader and first.scheduler, timeout_s=30)
    second = await _spawn(tmp_path / "b", postgres_url)
    workers.append(second)
    await wait_for(lambda: second.attempts >= 5, timeout_s=30)  # it kept trying, and kept losing
    assert first.leader and not second.leader and not second.scheduler
    first.process.send_signal(signal.SIGKILL)  # no clean shutdown: the lock goes with the connection
    await wait_for(lambda: second.leader and second.scheduler, timeout_s=60)
    await first.process.wait()


async def test_a_slot_fired_in_two_processes_posts_once(tmp_path: Path, postgres_url: str) -> None:
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    bots, publishers = [], []
    for name in ("a", "b"):
        settings = settings_for(tmp_path / name, CHORUS_STORE__URL=postgres_url, CHORUS_DROPS__TICK_S="3600")
        bot = await make_bot(settings)
        service = DropsService(bot.chorus, clock=clock)
        service.attach()
        publisher = RecordingPublisher()
        await bot.chorus.attach_publisher(publisher)
        bots.append((bot, service))
        publishers.append(publisher)
    try:
        await bots[0][0].say("/drops enable")
        await asyncio.gather(*(service.run_slot(CONVERSATION.key) for _, service in bots))
        assert sum(len(p.posts) for p in publishers) == 1
    finally:
        for bot, _ in bots:
            await bot.chorus.close()
