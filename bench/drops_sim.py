"""Drops simulator: how much engagement the planner earns against an oracle, a fixed 09:00 UTC post and random.

Synthetic channels have hidden tastes over kind × tone × topic (slowly drifting), hidden activity hours in their own
time zone and noisy engagement (reactions, 👎, replies, clicks). Every policy gets one slot a day; the planner is
driven only through its pure interface (`record_activity`, `choose`, `observe`). Scores are expected engagement of
what each policy posted, summed over its first 30/60/90 drops, as a fraction of the oracle's.

Settings: tastes mild / moderate (the headline) / strong; and, with moderate tastes, a stable channel (no drift),
a drifting one (tastes move 0.1 logit a day instead of 0.03), one with no activity data (the planner must learn
the hour from engagement alone), and one whose channels share half their taste with the rest of their deployment.
Besides the planner run channel by channel, "planner (deployment)" runs deployments of ten channels that pool what
they learn (`SharedPrior`), and "Thompson reference" is plain factorized Thompson sampling.

    PYTHONPATH=. python bench/drops_sim.py [--channels 200] [--seed 7] [--settings moderate,drifting]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
# This checkout's `scheduler` first (not another checkout's on PYTHONPATH), bench/ last for local_generator.
sys.path[:] = [str(REPO_ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR), str(BENCH_DIR)]

from local_generator import machine_info, write_results  # noqa: E402

from scheduler.planner import (  # noqa: E402
    CLICK_WEIGHT,
    DEFAULT_REACTION_WEIGHTS,
    REPLY_WEIGHT,
    DropPlan,
    Engagement,
    Planner,
    SharedPrior,
    engagement_counts,
)

KINDS = ["prompt", "idea", "story", "question", "poem"]
TONES = ["neutral", "playful", "formal", "witty", "bold", "warm", "dramatic", "minimal", "poetic", "professional"]
TOPICS = ["nature", "cities", "food", "technology", "memories", "the future"]
CHECKPOINTS = (30, 60, 90)
DAYS = 130
POSITIVE = ["👍", "❤️", "🔥", "😂", "🎉"]
RESULTS = Path(__file__).parent / "results"


@dataclass
class Channel:
    """Hidden truth about one channel."""

    offset: int  # local = UTC + offset hours
    activity: np.ndarray  # relative activity per local hour, peak 1
    messages_per_day: float
    audience: float
    bias: float
    kind: np.ndarray
    tone: np.ndarray
    topic: np.ndarray
    mix: np.ndarray  # kind × tone × topic interactions

    def appeal(self) -> np.ndarray:
        logits = self.bias + self.kind[:, None, None] + self.tone[None, :, None] + self.topic[None, None, :] + self.mix
        return 1.0 / (1.0 + np.exp(-logits))

    def drift(self, rng: np.random.Generator, sd: float = 0.03) -> None:
        self.kind += rng.normal(0, sd, self.kind.shape)
        self.tone += rng.normal(0, sd, self.tone.shape)
        self.topic += rng.normal(0, sd, self.topic.shape)


# How strongly tastes differ (logit sd per factor, interactions). "moderate" is the headline; "mild" and "strong"
# bracket it (under "strong" the best of the 300 combinations is worth several random ones).
TASTES = {
    "mild": {"bias": -0.5, "kind": 0.3, "tone": 0.15, "topic": 0.3, "mix": 0.1},
    "moderate": {"bias": -0.5, "kind": 0.5, "tone": 0.3, "topic": 0.5, "mix": 0.15},
    "strong": {"bias": -1.0, "kind": 0.8, "tone": 0.8, "topic": 0.8, "mix": 0.25},
}


def make_channel(
    rng: np.random.Generator, tastes: str = "moderate", shared: float = 0.0, deployment: int = 0
) -> Channel:
    """One channel; with `shared` > 0 that share of its taste variance is common to its deployment (the channels
    `deployment` names), the rest its own."""
    hours = np.arange(24)
    peak = int(rng.integers(7, 23))
    second = (peak + int(rng.integers(5, 10))) % 24

    def bump(center: int, width: float) -> np.ndarray:
        d = np.minimum(np.abs(hours - center), 24 - np.abs(hours - center))
        return np.exp(-(d**2) / (2 * width**2))

    # A busy evening (or lunch) peak, a smaller second one, and a quiet but not silent night.
    activity = 0.1 + bump(peak, 2.5) + 0.5 * bump(second, 2.0)
    activity = activity / activity.max()
    channel = Channel(
        offset=int(rng.choice([-8, -5, -3, 0, 1, 2, 3, 5, 8, 9])),
        activity=activity,
        messages_per_day=float(rng.uniform(60, 400)),
        audience=float(rng.uniform(15, 60)),
        bias=TASTES[tastes]["bias"],
        kind=rng.normal(0, TASTES[tastes]["kind"], len(KINDS)),
        tone=rng.normal(0, TASTES[tastes]["tone"], len(TONES)),
        topic=rng.normal(0, TASTES[tastes]["topic"], len(TOPICS)),
        mix=rng.normal(0, TASTES[tastes]["mix"], (len(KINDS), len(TONES), len(TOPICS))),
    )
    if shared > 0:
        common = np.random.default_rng([deployment, 424242])
        own, same = np.sqrt(1 - shared), np.sqrt(shared)
        for name in ("kind", "tone", "topic"):
            mine = getattr(channel, name)
            setattr(channel, name, own * mine + same * common.normal(0, TASTES[tastes][name], mine.shape))
    return channel


_MEAN_POSITIVE = float(np.mean([DEFAULT_REACTION_WEIGHTS[e] for e in POSITIVE]))


def expected_reward(channel: Channel, appeal: float, hour: int) -> float:
    reach = channel.audience * channel.activity[hour % 24]
    reactions = 0.5 * reach * appeal * _MEAN_POSITIVE
    thumbs_down = 0.05 * reach * (1 - appeal) * DEFAULT_REACTION_WEIGHTS["👎"]
    return reactions + thumbs_down + REPLY_WEIGHT * 0.1 * reach * appeal + CLICK_WEIGHT * 0.1 * reach * appeal


def sample_engagement(channel: Channel, appeal: float, hour: int, rng: np.random.Generator) -> Engagement:
    reach = channel.audience * channel.activity[hour % 24]
    # Each day is noisy on its own: some days fewer people look at all.
    reach *= float(rng.lognormal(0, 0.35))
    positive = rng.poisson(0.5 * reach * appeal)
    reactions = {emoji: 0 for emoji in POSITIVE}
    for emoji in rng.choice(POSITIVE, size=positive):
        reactions[str(emoji)] += 1
    reactions["👎"] = int(rng.poisson(0.05 * reach * (1 - appeal)))
    return Engagement(
        reactions=reactions,
        replies=int(rng.poisson(0.1 * reach * appeal)),
        clicks_up=int(rng.poisson(0.1 * reach * appeal)),
    )


@dataclass(frozen=True)
class Setting:
    """One simulated world: how strongly tastes differ, how fast they drift, and whether activity is counted."""

    tastes: str = "moderate"
    drift: float = 0.03
    activity: bool = True
    # The share of taste variance the channels of one deployment have in common (0: every channel its own).
    shared: float = 0.0


SETTINGS = {
    "moderate": Setting(),
    "mild": Setting(tastes="mild"),
    "strong": Setting(tastes="strong"),
    "stable": Setting(drift=0.0),
    "drifting": Setting(drift=0.1),
    "no activity data": Setting(activity=False),
    "shared tastes": Setting(shared=0.5),
}
# Channels per simulated deployment for the "planner (deployment)" policy, which pools what they learn.
DEPLOYMENT = 10
# In a deployment, channel j starts posting on day 1 + JOIN_DAYS * j (channels join over a month).
JOIN_DAYS = 3


class ThompsonReference:
    """A plain factorized Thompson-sampling reference: for each kind, tone and topic on its own, a Gaussian belief
    about log(liked events) from the drops that used it (prior N(0, 1), noise variance 0.25); the hour is the
    planner's. No covering design, no shared level, no 👎 model, no drift, no robustness."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 77])
        self.stats = {
            group: np.zeros((len(names), 2)) for group, names in (("kind", KINDS), ("tone", TONES), ("topic", TOPICS))
        }

    def choose(self) -> tuple[str, str, str]:
        picks = []
        for group, names in (("kind", KINDS), ("tone", TONES), ("topic", TOPICS)):
            n, total = self.stats[group][:, 0], self.stats[group][:, 1]
            # The prior is centred on what drops got on average so far (log counts are far from 0).
            seen = float(self.stats[group][:, 0].sum())
            centre = float(self.stats[group][:, 1].sum()) / seen if seen else 0.0
            precision = 1.0 + n / 0.25
            sample = (centre + total / 0.25) / precision + self.rng.standard_normal(len(names)) / np.sqrt(precision)
            picks.append(names[int(np.argmax(sample))])
        return picks[0], picks[1], picks[2]

    def observe(self, kind: str, tone: str, topic: str, y: float) -> None:
        for group, names, name in (("kind", KINDS, kind), ("tone", TONES, tone), ("topic", TOPICS, topic)):
            self.stats[group][names.index(name)] += (1.0, y)


def simulate(
    channel_seed: int, policy: str, setting: Setting | str = "moderate", planner_kwargs: dict | None = None
) -> list[tuple[float, float]]:
    """(expected reward of the policy's drop, oracle's expected reward) per posted drop, in order."""
    return simulate_group([channel_seed], policy, setting, planner_kwargs)[0]


def simulate_group(
    channel_seeds: list[int], policy: str, setting: Setting | str = "moderate", planner_kwargs: dict | None = None
) -> list[list[tuple[float, float]]]:
    """`simulate` for channels that run side by side, day by day; under "planner (deployment)" they are one
    deployment: channel j joins on day 1 + JOIN_DAYS * j, and each day every channel adopts the prior pooled from
    all of them (`SharedPrior`, which only channels with enough drops feed), as the service does before a choice."""
    if isinstance(setting, str):
        setting = SETTINGS.get(setting, Setting(tastes=setting))
    worlds = []
    for channel_seed in channel_seeds:
        rng = np.random.default_rng(channel_seed)
        channel = make_channel(rng, setting.tastes, setting.shared, channel_seed // DEPLOYMENT)
        noise = np.random.default_rng(channel_seed + 1)
        choices = np.random.default_rng(channel_seed + 2)
        planner = Planner(KINDS, TONES, TOPICS, seed=channel_seed, **(planner_kwargs or {}))
        worlds.append((rng, channel, noise, choices, planner, ThompsonReference(channel_seed), []))
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for day in range(DAYS):
        if policy == "planner (deployment)" and day > 1:
            prior = SharedPrior.from_planners([world[4] for world in worlds])
            for world in worlds:
                world[4].adopt_prior(prior)
        for j, (rng, channel, noise, choices, planner, reference, out) in enumerate(worlds):
            # A deployment's channels join one every JOIN_DAYS days; until then a channel only counts activity.
            joined = policy != "planner (deployment)" or day > JOIN_DAYS * j
            _day(
                day,
                start,
                setting,
                policy if joined else "waiting",
                rng,
                channel,
                noise,
                choices,
                planner,
                reference,
                out,
            )
    return [world[-1] for world in worlds]


def _day(
    day: int,
    start: datetime,
    setting: Setting,
    policy: str,
    rng: np.random.Generator,
    channel: Channel,
    noise: np.random.Generator,
    choices: np.random.Generator,
    planner: Planner,
    reference: ThompsonReference,
    out: list[tuple[float, float]],
) -> None:
    # Yesterday's channel messages, counted by local hour (what the Activity events feed the planner).
    local_day = start + timedelta(days=day - 1)
    counts = noise.poisson(channel.messages_per_day * channel.activity / channel.activity.sum())
    for hour, count in enumerate(counts):
        if count and setting.activity:
            planner.record_activity(local_day.weekday(), hour, int(count))
    if day == 0:
        return
    if policy == "waiting":
        channel.drift(rng, setting.drift)
        return
    appeal = channel.appeal()
    best = float(max(expected_reward(channel, float(appeal.max()), h) for h in range(24)))
    now = start + timedelta(days=day)
    if policy in ("planner", "planner@09utc", "planner (deployment)"):
        plan = planner.choose(now)
        hour = (9 + channel.offset) % 24 if policy == "planner@09utc" else plan.hour
        if plan.post:
            k, t, p = KINDS.index(plan.kind), TONES.index(plan.tone), TOPICS.index(plan.topic)
            value = expected_reward(channel, float(appeal[k, t, p]), hour)
            planner.observe(
                plan.__class__(**{**plan.as_dict(), "hour": hour}),
                sample_engagement(channel, float(appeal[k, t, p]), hour, noise),
            )
            out.append((value, best))
    elif policy == "Thompson reference":
        hour = planner.choose(now).hour
        kind, tone, topic = reference.choose()
        k, t, p = KINDS.index(kind), TONES.index(tone), TOPICS.index(topic)
        engagement = sample_engagement(channel, float(appeal[k, t, p]), hour, noise)
        planner.observe(DropPlan(kind, tone, topic, hour), engagement)
        liked, _ = engagement_counts(engagement)
        exposure = float(np.log(max(float(planner.activity_profile()[hour]), 0.05)))
        reference.observe(kind, tone, topic, float(np.log(liked + 0.5)) - exposure)
        out.append((expected_reward(channel, float(appeal[k, t, p]), hour), best))
    else:
        k, t, p = (int(choices.integers(n)) for n in (len(KINDS), len(TONES), len(TOPICS)))
        hour = (9 + channel.offset) % 24 if policy == "fixed 09:00 UTC" else int(choices.integers(24))
        out.append((expected_reward(channel, float(appeal[k, t, p]), hour), best))
    channel.drift(rng, setting.drift)


POLICIES = (
    "oracle",
    "planner",
    "planner (deployment)",
    "Thompson reference",
    "planner@09utc",
    "fixed 09:00 UTC",
    "uniform random",
)


def run(
    channels: int,
    seed: int,
    setting: Setting | str = "moderate",
    planner_kwargs: dict | None = None,
    policies: tuple[str, ...] = POLICIES[1:],
) -> dict:
    table: dict[str, dict[int, float]] = {}
    for policy in policies:
        sums = {n: [0.0, 0.0] for n in CHECKPOINTS}
        size = DEPLOYMENT if policy == "planner (deployment)" else 1
        seeds = [seed * 100_000 + c for c in range(channels)]
        traces = [
            trace
            for first in range(0, channels, size)
            for trace in simulate_group(seeds[first : first + size], policy, setting, planner_kwargs)
        ]
        for trace in traces:
            for n in CHECKPOINTS:
                head = trace[:n]
                sums[n][0] += sum(v for v, _ in head)
                sums[n][1] += sum(b for _, b in head)
        table[policy] = {n: sums[n][0] / sums[n][1] for n in CHECKPOINTS}
    table["oracle"] = {n: 1.0 for n in CHECKPOINTS}
    return table


def table_rows(table: dict) -> list[str]:
    lines = ["| policy | after 30 drops | after 60 | after 90 |", "| --- | ---: | ---: | ---: |"]
    for policy in POLICIES:
        if policy in table:
            row = table[policy]
            lines.append(f"| {policy} | " + " | ".join(f"{100 * row[n]:.1f}%" for n in CHECKPOINTS) + " |")
    return lines


def verdict(table: dict) -> str:
    if "planner" not in table:
        return ""
    at30, at60 = table["planner"][30], table["planner"][60]
    ratio = at60 / table["fixed 09:00 UTC"][60] if "fixed 09:00 UTC" in table else float("nan")
    return (
        f"Targets: ≥ 75% of oracle after 30 drops — {'met' if at30 >= 0.75 else 'missed'} ({100 * at30:.1f}%); "
        f"≥ 80% after 60 — {'met' if at60 >= 0.80 else 'missed'} ({100 * at60:.1f}%); "
        f"{ratio:.1f}× fixed 09:00 UTC after 60."
    )


def markdown(tables: dict[str, dict], meta: dict) -> str:
    machine = meta["machine"]
    lines = [
        f"Drops simulator — {meta['channels']} channels per setting, seed {meta['seed']}, "
        f"{machine['os_cpu_count']}-core {machine['cpu_model'] or 'CPU'} (shared), Python {machine['python']}, "
        f"load {machine['loadavg_start'][0]:.1f} → {meta['loadavg_end'][0]:.1f}, {machine['date'][:10]}, "
        f"commit {(machine['git_commit'] or '?')[:7]}",
        "",
    ]
    for name, table in tables.items():
        lines += [f"**{name}** ({SETTINGS[name]})", "", *table_rows(table), "", verdict(table), ""]
    lines += [
        "Cumulative expected engagement of each policy's first 30/60/90 drops as a share of the oracle's (the oracle",
        "knows each channel's current tastes and activity hours). Fixed and random pick content uniformly;",
        "planner@09utc is the planner's content choice posted at the fixed hour, to separate timing from content.",
        f"planner (deployment) runs the channels in deployments of {DEPLOYMENT}, joining one every {JOIN_DAYS} days,",
        "that share a prior; Thompson reference: plain factorized Thompson sampling at the planner's hour.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--policies", default=",".join(POLICIES[1:]), help="comma-separated (the oracle is 100%%)")
    parser.add_argument("--out", default="drops_sim", help="file name (no extension) under bench/results/")
    args = parser.parse_args()
    machine = machine_info()
    started = time.perf_counter()
    names = [name.strip() for name in args.settings.split(",") if name.strip()]
    policies = tuple(name.strip() for name in args.policies.split(",") if name.strip())
    tables = {name: run(args.channels, args.seed, SETTINGS[name], policies=policies) for name in names}
    meta = {
        "channels": args.channels,
        "seed": args.seed,
        "machine": machine,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "loadavg_end": list(os.getloadavg()),
    }
    text = markdown(tables, meta)
    print(text)
    headline = tables.get("moderate") or next(iter(tables.values()))
    payload = {
        "meta": meta,
        "checkpoints": list(CHECKPOINTS),
        "fraction_of_oracle": {p: {str(n): round(float(v), 4) for n, v in headline[p].items()} for p in headline},
        "planner_vs_fixed_at_60": round(float(headline["planner"][60] / headline["fixed 09:00 UTC"][60]), 3)
        if "fixed 09:00 UTC" in headline and "planner" in headline
        else None,
        "by_setting": {
            name: {p: {str(n): round(float(v), 4) for n, v in table[p].items()} for p in table}
            for name, table in tables.items()
        },
        "settings": {name: SETTINGS[name].__dict__ for name in names},
        "tastes": TASTES,
        "targets": {"oracle_fraction_at_30": 0.75, "oracle_fraction_at_60": 0.80},
    }
    write_results(RESULTS, args.out, text, payload)


if __name__ == "__main__":
    main()
