"""The drops planner through its pure interface: what it learns to post, when, and how often."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from scheduler.planner import (
    STATE_VERSION,
    DropPlan,
    Engagement,
    Planner,
    engagement_counts,
    engagement_reward,
    quiet_hours,
    too_similar,
)

KINDS = ["prompt", "idea", "story", "question"]
TONES = ["neutral", "playful", "witty", "warm"]
TOPICS = ["food", "cities", "nature"]
MONDAY = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _liked(plan: DropPlan, kind: str, topic: str) -> float:
    return 20.0 if (plan.kind, plan.topic) == (kind, topic) else (6.0 if plan.kind == kind else 1.0)


def _activity(planner: Planner, peak: int, days: int = 7) -> None:
    for day in range(days):
        for hour in range(24):
            distance = min(abs(hour - peak), 24 - abs(hour - peak))
            planner.record_activity(day, hour, max(0, 40 - 12 * distance))


def test_it_learns_what_the_channel_likes() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=1)
    for _ in range(40):
        plan = planner.choose(MONDAY)
        planner.observe(plan, _liked(plan, "question", "food"))
    last = [planner.choose(MONDAY) for _ in range(10)]
    assert sum((p.kind, p.topic) == ("question", "food") for p in last) >= 8
    assert planner.learned()["kind"][0][0] == "question"


def test_decay_follows_a_change_of_taste() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=2, decay=0.9)
    for _ in range(40):
        plan = planner.choose(MONDAY)
        planner.observe(plan, _liked(plan, "story", "nature"))
    for _ in range(40):
        plan = planner.choose(MONDAY)
        planner.observe(plan, _liked(plan, "idea", "cities"))
    last = [planner.choose(MONDAY) for _ in range(10)]
    assert sum(p.kind == "idea" for p in last) >= 7


def test_auto_time_posts_at_the_peak_and_sometimes_nearby_never_in_quiet_hours() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=3, quiet=(22, 8))
    _activity(planner, peak=20)
    hours = [planner.choose(MONDAY + timedelta(days=i)).hour for i in range(200)]
    assert max(set(hours), key=hours.count) == 20
    assert set(hours) - {20}, "it should try neighbouring hours now and then"
    assert set(hours) <= {18, 19, 20, 21}, "nearby only, and never inside 22:00-08:00"


def test_without_activity_it_uses_the_default_hour_and_a_fixed_time_wins() -> None:
    assert Planner(KINDS, TONES, TOPICS, default_hour=17).choose(MONDAY).hour == 17
    fixed = Planner(KINDS, TONES, TOPICS, fixed_hour=9)
    _activity(fixed, peak=20)
    assert {fixed.choose(MONDAY).hour for _ in range(20)} == {9}


def test_frequency_backs_off_when_nobody_engages_and_recovers() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=4, low_streak=3)
    posted = []
    for _ in range(30):
        plan = planner.choose(MONDAY)
        posted.append(plan.post)
        if plan.post:
            planner.observe(plan, 0.0)
    assert planner.backoff >= 2
    assert posted[-12:].count(True) <= 5, "quiet channels get fewer drops"
    for _ in range(40):
        plan = planner.choose(MONDAY)
        if plan.post:
            planner.observe(plan, 15.0)
    assert planner.backoff == 0
    assert all(planner.choose(MONDAY).post for _ in range(5))


def test_state_survives_a_json_round_trip() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=5)
    _activity(planner, peak=9)
    for _ in range(12):
        plan = planner.choose(MONDAY)
        planner.observe(plan, _liked(plan, "prompt", "cities"))
    copy = Planner.from_state(json.loads(json.dumps(planner.to_state())))
    assert copy.choose(MONDAY) == planner.choose(MONDAY)
    assert copy.learned() == planner.learned()


def test_new_topics_join_without_forgetting_the_rest() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=6)
    for _ in range(20):
        plan = planner.choose(MONDAY)
        planner.observe(plan, _liked(plan, "question", "food"))
    before = dict(planner.learned(10)["topic"])
    planner.set_options(KINDS, TONES, [*TOPICS, "space"])
    after = dict(planner.learned(10)["topic"])
    assert after["food"] == pytest.approx(before["food"])
    assert "space" in planner.topics and "space" not in after, "untried topics are not reported as learned"


def test_engagement_reward_weights_reactions_replies_and_clicks() -> None:
    loved = Engagement(reactions={"❤️": 2, "👍": 1}, replies=1, clicks_up=1)
    hated = Engagement(reactions={"👎": 3})
    assert engagement_reward(loved) == 2 * 2 + 1 + 3 + 2
    assert engagement_reward(hated) < 0
    assert engagement_reward(Engagement(reactions={"🦄": 2})) == 2.0


def test_similarity_and_quiet_hours() -> None:
    assert too_similar([1.0, 0.0], [[0.0, 1.0], [0.99, 0.05]])
    assert not too_similar([1.0, 0.0], [[0.0, 1.0]])
    assert quiet_hours((22, 8)) == frozenset([22, 23, 0, 1, 2, 3, 4, 5, 6, 7])
    assert quiet_hours(None) == frozenset()


def test_thumbs_down_against_likes_finds_the_taste_when_the_audience_swings() -> None:
    # How many people look swings tenfold from day to day; only the share of 👍 against 👎 says what they like.
    planner = Planner(KINDS, TONES, TOPICS, seed=7)
    _activity(planner, peak=18)
    rng = np.random.default_rng(7)
    for day in range(40):
        plan = planner.choose(MONDAY + timedelta(days=day))
        audience = float(rng.lognormal(3.0, 1.0))
        appeal = 0.8 if plan.kind == "story" else 0.3
        liked = int(audience * appeal)
        planner.observe(plan, Engagement(reactions={"👍": liked, "👎": int(audience - liked)}))
    last = [planner.choose(MONDAY) for _ in range(10)]
    assert sum(p.kind == "story" for p in last) >= 8
    assert planner.learned()["kind"][0][0] == "story"


def test_engagement_counts_split_liked_from_disliked() -> None:
    engagement = Engagement(reactions={"❤️": 2, "👎": 3, "🦄": 1}, replies=1, clicks_up=1, clicks_down=2)
    assert engagement_counts(engagement) == (5, 5)
    assert engagement_counts(engagement, {"👎": 1.0}) == (8, 2), "a 👎 weighted positive counts as liked"


def test_hour_exploration_can_be_turned_off() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=3, hour_explore=0.0)
    _activity(planner, peak=20)
    assert {planner.choose(MONDAY + timedelta(days=i)).hour for i in range(100)} == {20}


def test_a_version_1_state_still_loads_and_keeps_what_it_learned() -> None:
    planner = Planner(KINDS, TONES, TOPICS, seed=8)
    _activity(planner, peak=19)
    state = json.loads(json.dumps(planner.to_state()))
    # Rebuild the state as the first planner stored it: no levels, no version, a log-linear posterior.
    v1_features = [
        "bias",
        *(f"kind:{k}" for k in KINDS),
        *(f"tone:{t}" for t in TONES),
        *(f"topic:{p}" for p in TOPICS),
    ]
    precision = np.diag([1 / 1.5**2] + [4.0] * (len(v1_features) - 1)) + 3 * np.eye(len(v1_features))
    target = np.zeros(len(v1_features))
    target[v1_features.index("kind:idea")] = 2.0
    for key in ("version", "level_means"):
        state.pop(key)
    for key in ("optimism", "hour_explore"):
        state["config"].pop(key)
    state.update(features=v1_features, precision=precision.tolist(), target=target.tolist())
    state.update(hour_n=[0.0] * 19 + [3.0] + [0.0] * 4, hour_sum=[0.0] * 19 + [2.7] + [0.0] * 4, observed=3)
    loaded = Planner.from_state(state)
    assert loaded.learned()["kind"][0][0] == "idea"
    assert loaded.peak_hour() == 19
    plan = loaded.choose(MONDAY)
    assert plan.hour in {18, 19, 20}
    loaded.observe(plan, Engagement(reactions={"👍": 5}))
    again = loaded.to_state()
    assert again["version"] == STATE_VERSION and len(again["precision"]) == len(again["features"])
