"""One bot process for the leadership test: Chorus on a shared Postgres with the drops service attached.

Prints `state leader=<0|1> scheduler=<0|1> attempts=<n>` lines until it is killed.
    python tests/drops_leader_worker.py <store url> <home dir>
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from drops_support import RecordingPublisher

from scheduler.service import DropsService
from support import make_bot, settings_for


async def main(url: str, home: str) -> None:
    settings = settings_for(
        Path(home),
        CHORUS_STORE__URL=url,
        CHORUS_DROPS__LEADER_POLL_S="0.3",
        CHORUS_DROPS__TICK_S="3600",
    )
    bot = await make_bot(settings)
    service = DropsService(bot.chorus)
    service.attach()
    await bot.chorus.attach_publisher(RecordingPublisher())
    while True:
        leadership = service.leadership
        assert leadership is not None
        running = int(service.scheduler is not None and service.scheduler.running)
        print(f"state leader={int(service.is_leader)} scheduler={running} attempts={leadership.attempts}", flush=True)
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
