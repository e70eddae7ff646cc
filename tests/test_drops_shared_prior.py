"""A deployment's channels share what they learned: a new channel starts from the others' favourites."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from drops_support import Clock, drops_settings, start_drops
from sqlalchemy import select

from scheduler.models import DropChannel
from scheduler.planner import DropPlan, Engagement, Planner, SharedPrior


def _taught(template: Planner, favourite: str, seed: int) -> Planner:
    """A channel of the same deployment whose drops did best as `favourite` (40 drops)."""
    planner = Planner(template.kinds, template.tones, template.topics, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        plan = planner.choose(datetime(2026, 12, 1, 9, tzinfo=UTC))
        rate = 30.0 if plan.kind == favourite else 8.0
        planner.observe(DropPlan(**plan.as_dict()), Engagement(reactions={"👍": int(rng.poisson(rate))}))
    return planner


async def test_a_new_channel_first_posts_what_the_deployments_other_channels_do_best_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = await start_drops(drops_settings(tmp_path), Clock(datetime(2026, 12, 1, 9, tzinfo=UTC)))
    try:
        await drops.say("/drops enable --time 09:00 --kinds prompt,idea,story,question")
        async with drops.bot.store.session() as session:
            row = (await session.scalars(select(DropChannel))).one()
        fresh = Planner.from_state(row.planner)
        alone = Planner.from_state(row.planner).choose(datetime(2026, 12, 1, 9, tzinfo=UTC)).kind
        favourite = next(kind for kind in fresh.kinds if kind != alone)  # not what it would pick on its own
        async with drops.bot.store.session() as session, session.begin():
            for n in range(3):
                session.add(
                    DropChannel(
                        key=f"{row.key}-other{n}",
                        platform=row.platform,
                        workspace=row.workspace,
                        channel=f"other{n}",
                        thread=None,
                        kinds=list(row.kinds),
                        cadence=row.cadence,
                        time=row.time,
                        tz=row.tz,
                        topics=list(row.topics),
                        planner=_taught(fresh, favourite, seed=n).to_state(),
                        enabled=False,
                    )
                )
        drops.clock.advance(minutes=11)  # the deployment's prior is read again at most every 10 minutes
        reply = await drops.say("/drops now")
        assert reply.startswith(f"Posted a {favourite} ")
        assert "does best with" not in await drops.say("/drops status"), "the others' taste is not claimed as learned"
        read = []
        looks = SharedPrior.looks
        monkeypatch.setattr(SharedPrior, "looks", staticmethod(lambda planner: read.append(1) or looks(planner)))
        posted = {favourite}
        for _ in range(4):  # the favourite and the rest tried here; nobody engages
            reply = await drops.say("/drops now")
            assert reply.startswith("Posted a ")
            posted.add(reply.removeprefix("Posted a ").split()[0])
        # Chosen before any engagement came in, the drops still cover every kind instead of repeating the favourite.
        assert posted == set(fresh.kinds)
        # Within the refresh time the deployment's planners are not read again for every drop (thousands of
        # channels made each slot read them all).
        assert read == []
        drops.clock.advance(minutes=11)
        await drops.say("/drops status")
        assert len(read) == 3
        drops.clock.advance(hours=25)
        assert await drops.service.settle_due() == 5
        status = await drops.say("/drops status")
        assert "none got any engagement yet" in status and "does best with" not in status, status
    finally:
        await drops.bot.chorus.close()
