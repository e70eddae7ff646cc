"""Render an example /stats image from a simulated month (for the README): one synthetic channel's activity and
30 days of planner-chosen drops with their simulated engagement.

    PYTHONPATH=. python bench/drops_stats_example.py   # writes bench/results/stats-example.png
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.drops_sim import KINDS, TONES, TOPICS, make_channel, sample_engagement
from scheduler.planner import Planner, engagement_reward
from scheduler.stats import StatsData, render_stats

OUT = Path(__file__).parent / "results" / "stats-example.png"


def main() -> None:
    rng = np.random.default_rng(11)
    channel = make_channel(rng)
    planner = Planner(KINDS, TONES, TOPICS, seed=11)
    weekday_shape = np.array([1.0, 0.95, 1.0, 1.05, 1.2, 1.5, 1.3])
    activity = np.zeros((7, 24))
    end = datetime(2026, 12, 1, tzinfo=UTC)
    start = end - timedelta(days=30)
    drops = []
    for day in range(30):
        when = start + timedelta(days=day)
        counts = rng.poisson(channel.messages_per_day * weekday_shape[when.weekday()] * channel.activity / 12)
        activity[when.weekday()] += counts
        for hour, count in enumerate(counts):
            planner.record_activity(when.weekday(), hour, int(count))
        plan = planner.choose(when)
        appeal = channel.appeal()[KINDS.index(plan.kind), TONES.index(plan.tone), TOPICS.index(plan.topic)]
        engagement = sample_engagement(channel, float(appeal), plan.hour, rng)
        planner.observe(plan, engagement)
        reward = engagement_reward(engagement) if day < 29 else None  # the newest is still counting
        drops.append((when.replace(hour=plan.hour), plan.kind, plan.tone, reward, "posted"))
    data = StatsData(channel="writing-club", tz="Europe/Berlin", activity=activity, drops=drops, start=start, end=end)
    render_stats(data, OUT)
    print(data.summary())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
