"""What to post, when and how often: a pure planner that learns one channel's taste from engagement.

No I/O and no clock of its own: `choose(now)` and `observe(plan, engagement)` are all a simulator or a test needs.

- **Model.** log(liked events) = level + kind + tone + topic (+ the hour's effect) + the day's noise, with the
  hour's activity as exposure. A Kalman filter keeps a Gaussian over these weights; a small random walk per drop
  (boosted when the drops keep surprising the model the same way) lets drifting tastes be followed while a stable
  channel keeps nearly all its evidence. Once a channel has given
  any 👎, liked-against-disliked (which divides the day's audience out) is a second observation of the same weights.
- **Robust.** A drop far off the prediction (10,000 👍 once) is clipped to a few predictive sds before it updates
  the weights or the noise estimate.
- **Content.** After a covering design (every kind, tone and topic is tried once before any is tried twice, each
  factor independently, so all of them are covered within the first drops), each option is valued optimistically,
  at its posterior mean plus one posterior sd (Bayes-UCB), plus a narrow Thompson draw. An option that was unlucky
  on its one early try keeps an sd that its rivals lose as they are posted, so it is tried again rather than left
  behind for good; the bonus shrinks with evidence, so a channel that has said what it likes is not made to wander.
- **Hour.** The week's busiest hour, unless one weekday's counts say otherwise beyond doubt. Without activity data
  the hour's effect is learned from engagement (Thompson sampling over a smooth prior across hours, wide enough
  for a quiet night a tenth of the evening's engagement).
- **Shared prior.** `SharedPrior.from_planners` pools what the other channels of one deployment learned (empirical
  Bayes: the mean effect of each kind, tone and topic, and how far channels differ, never surer than the default);
  `adopt_prior` starts a channel's options that it never tried from there. Without other channels nothing changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from config.settings import DEFAULT_CLICK_WEIGHT, DEFAULT_REACTION_WEIGHTS, DEFAULT_REPLY_WEIGHT

_log = logging.getLogger(__name__)

# Reactions count by emoji; anything not listed counts as DEFAULT_REACTION_WEIGHT. One definition, in config.
DEFAULT_REACTION_WEIGHT = 1.0
REPLY_WEIGHT = DEFAULT_REPLY_WEIGHT
CLICK_WEIGHT = DEFAULT_CLICK_WEIGHT
# Levels of the two observations (not part of a drop's appeal): how many people engage at all, and how readily
# they 👎.
_COUNT_BIAS = "level:count"
_RATIO_BIAS = "level:ratio"
# to_state's format; 1 and 2 (an information-form posterior without hour effects) are still loaded.
STATE_VERSION = 3
# The log-count noise variance starts at 0.25, worth this many drops, so a few lucky repeats do not make it sure.
_NOISE_PRIOR_N = 10.0
# Slow forgetting of the noise estimate, so a channel that becomes more regular is believed again.
_NOISE_DISCOUNT = 0.98
# Drift detection: a running mean of standardized surprises (weight per drop); by chance alone its square averages
# w / (2 - w); the drift variance is boosted by how far beyond that it is, at most this many times.
_SURPRISE_WEIGHT = 0.2
_SURPRISE_CHANCE = _SURPRISE_WEIGHT / (2 - _SURPRISE_WEIGHT)
_MAX_DRIFT_BOOST = 25.0
# The parts of a planner's configuration that belong to its channel (the rest are this version's defaults).
_CHANNEL_CONFIG = frozenset({"seed", "fixed_hour", "default_hour", "quiet", "min_activity"})
# Innovations beyond this many predictive sds are clipped: one absurd count cannot wreck the model.
_CLIP = 2.5
_GROUPS = ("kind", "tone", "topic")
# A shared prior is never surer than the default prior (channels that look alike may only have learned alike) and at
# most this many times looser, however alike or unlike the deployment's channels look so far.
_SHARED_MAX_RATIO = 2.0


@dataclass(frozen=True)
class Engagement:
    """What one drop got within the engagement window: reactions by emoji, replies, and button clicks (+1/-1)."""

    reactions: Mapping[str, int] = field(default_factory=dict)
    replies: int = 0
    clicks_up: int = 0
    clicks_down: int = 0


def engagement_reward(
    engagement: Engagement,
    reaction_weights: Mapping[str, float] = DEFAULT_REACTION_WEIGHTS,
    *,
    reply_weight: float = REPLY_WEIGHT,
    click_weight: float = CLICK_WEIGHT,
) -> float:
    """One number per drop: weighted reactions (👎 negative) + replies + clicks."""
    total = 0.0
    for emoji, count in engagement.reactions.items():
        total += reaction_weights.get(emoji, DEFAULT_REACTION_WEIGHT) * count
    total += reply_weight * engagement.replies
    total += click_weight * (engagement.clicks_up - engagement.clicks_down)
    return total


def engagement_counts(
    engagement: Engagement, reaction_weights: Mapping[str, float] = DEFAULT_REACTION_WEIGHTS
) -> tuple[int, int]:
    """(liked, disliked) events of one drop: positive reactions, replies and 👍 clicks; 👎 reactions and clicks."""
    liked = engagement.replies + engagement.clicks_up
    disliked = engagement.clicks_down
    for emoji, count in engagement.reactions.items():
        weight = reaction_weights.get(emoji, DEFAULT_REACTION_WEIGHT)
        if weight > 0:
            liked += count
        elif weight < 0:
            disliked += count
    return liked, disliked


def _gaussian(rng: np.random.Generator, covariance: np.ndarray) -> np.ndarray:
    """A zero-mean draw with this covariance; tolerant of the rounding that leaves it a hair from positive."""
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    return vectors @ (np.sqrt(np.clip(values, 0.0, None)) * rng.standard_normal(len(values)))


@dataclass(frozen=True)
class DropPlan:
    """One decision: what to post and at which local hour; `post` False means this slot is skipped (backoff)."""

    kind: str
    tone: str
    topic: str
    hour: int
    post: bool = True
    # Why the hour was picked, for /drops status: "peak", "explore", "fixed" or "default".
    hour_reason: str = "peak"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DropPlan:
        return cls(
            kind=str(data["kind"]),
            tone=str(data["tone"]),
            topic=str(data["topic"]),
            hour=int(data["hour"]),
            post=bool(data.get("post", True)),
            hour_reason=str(data.get("hour_reason", "peak")),
        )


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / norm if norm else 0.0


def too_similar(candidate: Sequence[float], recent: Sequence[Sequence[float]], threshold: float = 0.9) -> bool:
    """Is this candidate drop a near-repeat of one of the recent ones (cosine of sentence embeddings)?"""
    return any(cosine(candidate, other) >= threshold for other in recent)


def quiet_hours(spec: tuple[int, int] | None) -> frozenset[int]:
    """Hours (0-23) inside a quiet window [start, end); (22, 8) wraps past midnight."""
    if spec is None:
        return frozenset()
    start, end = spec
    if start == end:
        return frozenset()
    if start < end:
        return frozenset(range(start, end))
    return frozenset([*range(start, 24), *range(0, end)])


# Only channels with this many drops teach the deployment's shared prior (see SharedPrior.from_planners).
SHARED_PRIOR_MIN_DROPS = 20


@dataclass(frozen=True)
class SharedPrior:
    """What the other channels of one deployment learned, as a starting belief for a channel: per kind, tone and
    topic ("kind:story"), the mean effect across those channels and the sd a channel's own effect starts with (how
    far the deployment's channels differ from each other, plus the uncertainty of that mean)."""

    means: Mapping[str, float] = field(default_factory=dict)
    sds: Mapping[str, float] = field(default_factory=dict)
    channels: int = 0

    @classmethod
    def from_planners(
        cls, planners: Sequence[Planner], *, min_channels: int = 2, min_drops: int = SHARED_PRIOR_MIN_DROPS
    ) -> SharedPrior:
        """Empirical Bayes over channels: each channel's belief about an option it tried is a look at that
        channel's effect; the effects scatter around a deployment mean, with one spread per group (kinds, tones,
        topics), both estimated by moments, from channels with at least `min_drops` drops. Fewer than
        `min_channels` such channels give an empty prior (nothing changes); the spread stays between the default
        prior sd and `_SHARED_MAX_RATIO` times it."""
        # Only channels past their first weeks teach: channels still learning would echo each other's early noise.
        planners = [planner for planner in planners if planner.observed >= min_drops]
        default_var = max((p.prior_sd**2 for p in planners), default=0.09)
        return cls.from_looks([cls.looks(p) for p in planners], default_var=default_var, min_channels=min_channels)

    @staticmethod
    def looks(planner: Planner) -> dict[str, tuple[float, float]]:
        """What one channel tells the deployment: its belief (mean, variance) about each option it tried."""
        seen = {}
        for group in _GROUPS:
            for name in planner.options(group):
                belief = planner.evidence(group, name)
                if belief is not None:
                    seen[f"{group}:{name}"] = belief
        return seen

    @classmethod
    def from_looks(
        cls,
        channels_looks: Sequence[Mapping[str, tuple[float, float]]],
        *,
        default_var: float = 0.09,
        min_channels: int = 2,
    ) -> SharedPrior:
        """The pooled prior from channels' `looks` (each from a channel with enough drops; see `from_planners`)."""
        looks: dict[str, list[tuple[float, float]]] = {}
        for seen in channels_looks:
            for feature, belief in seen.items():
                looks.setdefault(feature, []).append(belief)
        channels = len(channels_looks)
        if channels < min_channels:
            return cls()
        means: dict[str, float] = {}
        sds: dict[str, float] = {}
        low, high = default_var, (_SHARED_MAX_RATIO**2) * default_var
        for group in _GROUPS:
            features = {f: v for f, v in looks.items() if f.startswith(f"{group}:") and len(v) >= min_channels}
            if not features:
                continue
            # By the law of total variance, how far channels' true effects scatter around the deployment's mean is
            # the scatter of their beliefs plus the average uncertainty left in each belief.
            centres = {}
            scatter, count = 0.0, 0
            for feature, values in features.items():
                e = np.array([mean for mean, _ in values])
                var = np.array([v for _, v in values])
                w = 1.0 / var
                centres[feature] = (float(w @ e / w.sum()), float(1.0 / w.sum()))
                scatter += float(((e - centres[feature][0]) ** 2).sum() * len(e) / (len(e) - 1) + var.sum())
                count += len(e)
            spread = min(max(scatter / count, low), high)
            for feature, (centre, uncertainty) in centres.items():
                means[feature] = centre
                sds[feature] = math.sqrt(spread + uncertainty)
        return cls(means, sds, channels)


class Planner:
    """One channel's planner. Serialise with `to_state()` / `Planner.from_state()`; it holds no references out."""

    def __init__(
        self,
        kinds: Sequence[str],
        tones: Sequence[str],
        topics: Sequence[str],
        *,
        seed: int = 0,
        prior_sd: float = 0.3,
        drift: float = 0.01,
        level_drift: float = 0.05,
        exploration: float = 0.15,
        optimism: float = 1.0,
        ratio_scale: float = 2.5,
        fixed_hour: int | None = None,
        default_hour: int = 9,
        quiet: tuple[int, int] | None = None,
        min_activity: int = 20,
        weekday_z: float = 4.0,
        hour_prior_sd: float = 1.0,
        hour_exploration: float = 0.5,
        hour_scale: float = 3.5,
        low_reward: float = 1.0,
        low_streak: int = 3,
        max_backoff: int = 3,
    ) -> None:
        if not tones or not topics:
            raise ValueError("a planner needs at least one tone and one topic")
        self.seed = seed
        # Prior sd of each kind, tone and topic's effect on log engagement.
        self.prior_sd = prior_sd
        # Random-walk sd per drop of each effect and of the level: how fast tastes and audiences may drift. Small for
        # effects, so a stable channel keeps its evidence; the surprise boost (up to 25x the variance) follows a change.
        self.drift = drift
        self.level_drift = level_drift
        # Scales the posterior spread that Thompson sampling draws from (1.0 = textbook): with tens of drops, not
        # thousands, mostly exploiting after the covering design earns more.
        self.exploration = exploration
        # Each option is valued at its posterior mean plus this many posterior sds: options still uncertain get
        # another look (the bonus shrinks as they are tried), so one unlucky early drop does not rule one out.
        self.optimism = optimism
        # A change of 1 in log(liked) is about this much change in log(liked / disliked): d logit(p) / d log(p) is
        # 1 / (1 - p), about 2.5 for an appeal near one half.
        self.ratio_scale = ratio_scale
        self.fixed_hour = fixed_hour
        self.default_hour = default_hour
        self.quiet = quiet
        self.min_activity = min_activity
        # How many Poisson sds one weekday's peak must beat the week's peak hour by, that weekday, to be used.
        self.weekday_z = weekday_z
        # Without activity data, the prior over the hour's effect on log engagement: sd 1 (a channel's night is
        # often a tenth of its evening) and correlated over about 3.5 hours either side, so a few drops near the
        # peak tell about its neighbours too. (0.5 and 2.5 h learned the hour more slowly.)
        self.hour_prior_sd = hour_prior_sd
        # Learning the hour from engagement alone needs real exploration: plain Thompson sampling over hours.
        self.hour_exploration = hour_exploration
        self.hour_scale = hour_scale
        self.low_reward = low_reward
        self.low_streak = low_streak
        self.max_backoff = max_backoff
        self.features: list[str] = []
        # The belief each kind, tone and topic started from (mean, variance): the default, or a shared prior.
        self._priors: dict[str, tuple[float, float]] = {}
        self._mean = np.zeros(0)
        self._cov = np.zeros((0, 0))
        self.tried: dict[str, int] = {}
        # Options of drops chosen to post, counted at the choice: drops several times a day are chosen before the
        # earlier ones' engagement is in, and the covering design must not pick the same untried option again.
        self.picked: dict[str, int] = {}
        self.kinds: list[str] = []
        self.tones: list[str] = []
        self.topics: list[str] = []
        self._ensure_feature("bias")
        self._ensure_feature(_COUNT_BIAS)
        self._ensure_feature(_RATIO_BIAS)
        self._ensure_hours()
        self.set_options(kinds, tones, topics)
        # Counts by weekday (0 = Monday) × hour in the channel's zone.
        self.activity = np.zeros((7, 24))
        self.level_set = False
        self._noise_ss = 0.0
        self._noise_n = 0.0
        self.disliked_seen = 0
        self._surprise = 0.0
        self._last_z = 0.0
        self.engaged = 0
        self.observed = 0
        self.chosen = 0
        self.backoff = 0
        self._low_run = 0
        self._slots_since_post = 0

    # -- configuration -------------------------------------------------------------------------------------------

    def set_options(self, kinds: Sequence[str], tones: Sequence[str], topics: Sequence[str]) -> None:
        """Change what may be chosen; what was learned about names that stay is kept."""
        self.kinds, self.tones = list(dict.fromkeys(kinds)), list(dict.fromkeys(tones))
        self.topics = list(dict.fromkeys(topics))
        for group, names in (("kind", self.kinds), ("tone", self.tones), ("topic", self.topics)):
            for name in names:
                self._ensure_feature(f"{group}:{name}")

    def _prior_variance(self, name: str) -> float:
        if name in (_COUNT_BIAS, _RATIO_BIAS):
            return 9.0  # the audience's size and mood: anything goes until the first drops say
        if name == "bias":
            return 1.0
        return self.prior_sd**2

    def _ensure_feature(self, name: str) -> None:
        if name in self.features:
            return
        n = len(self.features)
        cov = np.zeros((n + 1, n + 1))
        cov[:n, :n] = self._cov
        cov[n, n] = self._prior_variance(name)
        self._cov = cov
        self._mean = np.append(self._mean, 0.0)
        self.features.append(name)
        if name.split(":", 1)[0] in _GROUPS:
            self._priors[name] = (0.0, self._prior_variance(name))

    def options(self, group: str) -> list[str]:
        """The kinds, tones or topics that may be chosen now."""
        return {"kind": self.kinds, "tone": self.tones, "topic": self.topics}[group]

    def adopt_prior(self, prior: SharedPrior) -> int:
        """Start every option this channel never tried from what the deployment's other channels learned about it
        (see `SharedPrior`); what the channel learned itself is untouched. Returns how many options changed."""
        changed = 0
        for group in _GROUPS:
            for name in self.options(group):
                feature = f"{group}:{name}"
                if feature not in prior.means or self.tried.get(feature):
                    continue
                start = (float(prior.means[feature]), max(float(prior.sds[feature]) ** 2, self.prior_sd**2))
                if start == self._priors.get(feature):
                    continue
                i = self.features.index(feature)
                self._mean[i], variance = start
                self._cov[i, :] = 0.0
                self._cov[:, i] = 0.0
                self._cov[i, i] = variance
                self._priors[feature] = start
                changed += 1
        return changed

    def evidence(self, group: str, name: str) -> tuple[float, float] | None:
        """What this channel believes about one option's lift over its group's average (mean, variance), once it
        has tried it; None before."""
        if not self.tried.get(f"{group}:{name}") or len(self.options(group)) < 2:
            return None
        mean, sd = self.effect(group, name)
        return mean, sd * sd

    def _ensure_hours(self) -> None:
        """Hour effects, correlated across neighbouring hours (a smooth prior on the circle)."""
        if "hour:0" in self.features:
            return
        start = len(self.features)
        for hour in range(24):
            self._ensure_feature(f"hour:{hour}")
        hours = np.arange(24)
        distance = np.abs(hours[:, None] - hours[None, :])
        distance = np.minimum(distance, 24 - distance)
        block = self.hour_prior_sd**2 * np.exp(-(distance**2) / (2 * self.hour_scale**2)) + 1e-6 * np.eye(24)
        self._cov[start:, start:] = block
        # Without data, lean gently towards the configured default hour.
        self._mean[start:] = 0.2 * np.exp(
            -(np.minimum(np.abs(hours - self.default_hour), 24 - np.abs(hours - self.default_hour)) ** 2) / 18.0
        )

    def record_activity(self, weekday: int, hour: int, count: int = 1) -> None:
        """A channel message at this local weekday and hour (counts only, never text)."""
        self.activity[weekday % 7, hour % 24] += count

    # -- time of day ---------------------------------------------------------------------------------------------

    @property
    def knows_activity(self) -> bool:
        return bool(self.activity.sum() >= self.min_activity)

    def activity_profile(self, weekday: int | None = None) -> np.ndarray:
        """Relative activity per hour (peak = 1), smoothed over neighbouring hours; all ones without data."""
        if not self.knows_activity:
            return np.ones(24)
        hours = self.activity[weekday % 7] if weekday is not None else self.activity.sum(axis=0)
        smooth = 0.5 * hours + 0.25 * np.roll(hours, 1) + 0.25 * np.roll(hours, -1)
        return smooth / smooth.max() if smooth.max() > 0 else np.ones(24)

    def _allowed_hours(self) -> list[int]:
        quiet = quiet_hours(self.quiet)
        return [h for h in range(24) if h not in quiet] or list(range(24))

    def peak_hour(self, weekday: int | None = None) -> int | None:
        """The busiest allowed hour of the week (or of `weekday` when its own counts say so beyond doubt), or None
        before enough activity was counted."""
        if not self.knows_activity:
            return None
        allowed = self._allowed_hours()
        week = self.activity_profile()
        peak = max(allowed, key=lambda h: week[h])
        if weekday is None:
            return peak
        day = self.activity[weekday % 7]
        smooth = 0.5 * day + 0.25 * np.roll(day, 1) + 0.25 * np.roll(day, -1)
        day_peak = max(allowed, key=lambda h: smooth[h])
        lead = smooth[day_peak] - smooth[peak]
        if day_peak != peak and lead > self.weekday_z * math.sqrt(smooth[day_peak] + smooth[peak] + 1.0):
            return day_peak
        return peak

    def _hour_slice(self) -> slice:
        start = self.features.index("hour:0")
        return slice(start, start + 24)

    def choose_hour(self, day: datetime) -> tuple[int, str]:
        """The local hour to post at on `day` (channel-local), and why: "fixed", "peak", or "learning" (no
        activity data: Thompson sampling over what engagement said about each hour)."""
        if self.fixed_hour is not None:
            return self.fixed_hour, "fixed"
        peak = self.peak_hour(day.weekday())
        if peak is not None:
            return peak, "peak"
        hours = self._hour_slice()
        rng = self._rng(1)
        cov = self._cov[hours, hours]
        sample = self._mean[hours] + self.hour_exploration * _gaussian(rng, cov)
        allowed = self._allowed_hours()
        return max(allowed, key=lambda h: sample[h]), "learning"

    # -- choosing ------------------------------------------------------------------------------------------------

    def _rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.chosen, salt])

    def choose(self, now: datetime, *, hour: int | None = None) -> DropPlan:
        """The drop for the slot at `now` (channel-local time): content, hour, and whether to post at all. `hour` is
        the hour the slot was scheduled at (chosen earlier with `choose_hour`); without it the hour is chosen now."""
        if hour is None:
            hour, reason = self.choose_hour(now)
        else:
            reason = "fixed" if self.fixed_hour is not None else "scheduled"
        rng = self._rng(0)
        picks = []
        for group, names in (("kind", self.kinds), ("tone", self.tones), ("topic", self.topics)):
            if not names:
                raise ValueError(f"a planner needs at least one {group} to choose from")
            index = [self.features.index(f"{group}:{name}") for name in names]
            mean, cov = self._mean[index], self._cov[np.ix_(index, index)]
            # The bonus is the sd of each option's lead over its group's average (as `effect` reports it): what the
            # drops can tell apart, not the audience's size, which every option shares.
            centre = np.eye(len(index)) - 1.0 / len(index)
            bonus = self.optimism * np.sqrt(np.clip(np.diag(centre @ cov @ centre.T), 0.0, None))
            sample = mean + bonus + self.exploration * _gaussian(rng, cov)
            # A covering design: while some of this factor's options were never tried (nor chosen for a drop whose
            # engagement is still to come), one of those is chosen.
            untried = [
                i
                for i, name in enumerate(names)
                if not self.tried.get(f"{group}:{name}") and not self.picked.get(f"{group}:{name}")
            ]
            options = untried or list(range(len(names)))
            picks.append(names[max(options, key=lambda i: sample[i])])
        self.chosen += 1
        self._slots_since_post += 1
        post = self._slots_since_post > self.backoff
        if post:
            self._slots_since_post = 0
            for group, name in zip(("kind", "tone", "topic"), picks, strict=True):
                self.picked[f"{group}:{name}"] = self.picked.get(f"{group}:{name}", 0) + 1
        return DropPlan(picks[0], picks[1], picks[2], hour=hour, post=post, hour_reason=reason)

    # -- learning ------------------------------------------------------------------------------------------------

    def _row(self, names: Sequence[str], scale: float = 1.0) -> np.ndarray:
        h = np.zeros(len(self.features))
        for name in names:
            if name in self.features:
                h[self.features.index(name)] = scale
        return h

    @property
    def noise(self) -> float:
        """The day-to-day noise variance of log engagement, estimated robustly (prior 0.25, worth 10 drops)."""
        return (_NOISE_PRIOR_N * 0.25 + self._noise_ss) / (_NOISE_PRIOR_N + self._noise_n)

    def _update(self, h: np.ndarray, y: float, variance: float, *, robust: bool = True) -> float:
        """One Kalman update with a scalar observation y = h·θ + noise; the innovation is clipped to `_CLIP`
        predictive sds, so an outlier moves the weights no more than a surprising but plausible drop."""
        predictive = float(h @ self._cov @ h) + variance
        innovation = y - float(h @ self._mean)
        if robust:
            limit = _CLIP * math.sqrt(predictive)
            innovation = min(max(innovation, -limit), limit)
        gain = self._cov @ h / predictive
        self._mean = self._mean + gain * innovation
        self._cov = self._cov - np.outer(gain, gain) * predictive
        self._cov = (self._cov + self._cov.T) / 2
        self._last_z = innovation / math.sqrt(predictive)
        return innovation * innovation * variance / predictive

    def observe(
        self,
        plan: DropPlan,
        engagement: Engagement | float,
        *,
        reaction_weights: Mapping[str, float] = DEFAULT_REACTION_WEIGHTS,
        reward: float | None = None,
    ) -> float:
        """Learn from what a posted drop got; returns the reward it was worth (`reward` overrides the weighted sum)."""
        if isinstance(engagement, int | float):
            value = float(engagement)
            liked, disliked = max(value, 0.0), 0
        else:
            value = engagement_reward(engagement, reaction_weights) if reward is None else float(reward)
            liked, disliked = engagement_counts(engagement, reaction_weights)
        self.observed += 1
        self.engaged += liked > 0
        self.disliked_seen += disliked
        content = [f"kind:{plan.kind}", f"tone:{plan.tone}", f"topic:{plan.topic}"]
        for name in content:
            self._ensure_feature(name)
            self.tried[name] = self.tried.get(name, 0) + 1
        # Time passes: every effect may have drifted a little since the last drop; more when the recent drops kept
        # surprising the model the same way (a change of taste), not at all more in a channel that stays the same.
        drift = np.array([self._drift_variance(name) for name in self.features])
        self._cov = self._cov + np.diag(drift)
        hour = plan.hour % 24
        appeal = ["bias", *content]
        if self.knows_activity:
            exposure = math.log(max(float(self.activity_profile()[hour]), 0.05))
            extra = []
        else:
            exposure, extra = 0.0, [f"hour:{hour}"]
        x = self._row(appeal)
        y = math.log(liked + 0.5) - exposure
        h = x + self._row([_COUNT_BIAS, *extra])
        if not self.level_set:
            # The first drop says how big the audience is: centre the level on it, so the level's looseness does
            # not leak into the effect of whatever was tried first.
            rest = float(self._row(extra) @ self._mean)
            self._mean[self.features.index(_COUNT_BIAS)] = y - float(x @ self._mean) - rest
            self.level_set = True
        # Poisson noise of the count (about 1/count on the log scale) on top of the day's noise.
        poisson = 1.0 / (liked + 0.5)
        variance = self.noise + poisson
        squared = self._update(h, y, variance)
        self._surprise = (1 - _SURPRISE_WEIGHT) * self._surprise + _SURPRISE_WEIGHT * self._last_z
        self._noise_ss = _NOISE_DISCOUNT * self._noise_ss + max(squared - poisson, 0.0)
        self._noise_n = _NOISE_DISCOUNT * self._noise_n + 1.0
        if self.disliked_seen and self.ratio_scale > 0:
            # Liked against disliked divides the day's audience out: log(liked / disliked) = offset + eta.
            ratio = math.log((liked + 0.5) / (disliked + 0.5))
            h = x * self.ratio_scale + self._row([_RATIO_BIAS])
            if self.disliked_seen == disliked:  # the first drop with a 👎 centres the offset
                self._mean[self.features.index(_RATIO_BIAS)] = ratio - self.ratio_scale * float(x @ self._mean)
            self._update(h, ratio, 1.0 / (liked + 0.5) + 1.0 / (disliked + 0.5))
        self._update_backoff(value)
        return value

    @property
    def drift_boost(self) -> float:
        """How many times the usual drift variance the effects get now: the squared running mean of the recent
        standardized surprises against what chance alone gives it (1 while the model keeps being right)."""
        return min(max(self._surprise**2 / _SURPRISE_CHANCE, 1.0), _MAX_DRIFT_BOOST)

    def _drift_variance(self, name: str) -> float:
        if name == _COUNT_BIAS:
            return self.level_drift**2
        if name == _RATIO_BIAS or name.startswith("hour:"):
            return 0.0
        return self.drift**2 * self.drift_boost

    def _update_backoff(self, reward: float) -> None:
        if reward < self.low_reward:
            self._low_run += 1
            if self._low_run >= self.low_streak and self.backoff < self.max_backoff:
                self.backoff += 1
                self._low_run = 0
        else:
            self._low_run = 0
            self.backoff = max(0, self.backoff - 1)

    # -- reporting -----------------------------------------------------------------------------------------------

    def effect(self, group: str, name: str) -> tuple[float, float]:
        """What is believed about one kind, tone or topic: how much it lifts log engagement over its group's average,
        mean and sd (effects are only known relative to each other; the level absorbs any shared shift)."""
        contrast = self._contrast(group, name)
        return float(contrast @ self._mean), math.sqrt(max(float(contrast @ self._cov @ contrast), 0.0))

    def _contrast(self, group: str, name: str) -> np.ndarray:
        names = {"kind": self.kinds, "tone": self.tones, "topic": self.topics}[group]
        contrast = np.zeros(len(self.features))
        contrast[[self.features.index(f"{group}:{other}") for other in names]] = -1.0 / len(names)
        contrast[self.features.index(f"{group}:{name}")] += 1.0
        return contrast

    def learned(self, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """The kinds, tones and topics that credibly do better than the rest (more than half an sd above the group's
        average, and tried), best first with their lead, for /drops status; an empty group has no clear favourite.
        Only the channel's own evidence counts: the lead an option started with (from a prior shared across the
        deployment) is taken off first, and without any engaged drop nothing is named."""
        out: dict[str, list[tuple[str, float]]] = {}
        for group, names in (("kind", self.kinds), ("tone", self.tones), ("topic", self.topics)):
            index = {name: self.features.index(f"{group}:{name}") for name in names}
            if len(index) < 2 or not self.engaged:
                out[group] = []
                continue
            started = {name: self._priors.get(f"{group}:{name}", (0.0, 0.0))[0] for name in names}
            average_start = sum(started.values()) / len(names)
            ahead = []
            for name in names:
                lead, sd = self.effect(group, name)
                own = lead - (started[name] - average_start)
                if self.tried.get(f"{group}:{name}") and min(lead, own) > 0.5 * sd:
                    ahead.append((name, lead))
            out[group] = sorted(ahead, key=lambda item: -item[1])[:top]
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "kinds": self.kinds,
            "tones": self.tones,
            "topics": self.topics,
            "config": {
                "seed": self.seed,
                "prior_sd": self.prior_sd,
                "drift": self.drift,
                "level_drift": self.level_drift,
                "exploration": self.exploration,
                "optimism": self.optimism,
                "ratio_scale": self.ratio_scale,
                "fixed_hour": self.fixed_hour,
                "default_hour": self.default_hour,
                "quiet": list(self.quiet) if self.quiet else None,
                "min_activity": self.min_activity,
                "weekday_z": self.weekday_z,
                "hour_prior_sd": self.hour_prior_sd,
                "hour_exploration": self.hour_exploration,
                "hour_scale": self.hour_scale,
                "low_reward": self.low_reward,
                "low_streak": self.low_streak,
                "max_backoff": self.max_backoff,
            },
            "features": self.features,
            "mean": self._mean.tolist(),
            "cov": self._cov.tolist(),
            "tried": self.tried,
            "picked": self.picked,
            "priors": {name: list(start) for name, start in self._priors.items()},
            "activity": self.activity.tolist(),
            "level_set": self.level_set,
            "noise_ss": self._noise_ss,
            "noise_n": self._noise_n,
            "disliked_seen": self.disliked_seen,
            "surprise": self._surprise,
            "engaged": self.engaged,
            "observed": self.observed,
            "chosen": self.chosen,
            "backoff": self.backoff,
            "low_run": self._low_run,
            "slots_since_post": self._slots_since_post,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Planner:
        version = int(state.get("version", 1))
        # Only what belongs to the channel is kept; how the planner learns (priors, drift, exploration) comes from
        # this version's defaults, so an improvement reaches channels that were enabled before it.
        config = {key: value for key, value in dict(state["config"]).items() if key in _CHANNEL_CONFIG}
        config["quiet"] = tuple(config["quiet"]) if config.get("quiet") else None
        planner = cls(state["kinds"], state["tones"], state["topics"], **config)
        planner.activity = np.asarray(state["activity"], dtype=float)
        for key in ("observed", "chosen", "backoff"):
            setattr(planner, key, int(state.get(key, 0)))
        planner._low_run = int(state.get("low_run", 0))
        planner._slots_since_post = int(state.get("slots_since_post", 0))
        # A state from before this count was kept: what it learned came from engagement it saw.
        planner.engaged = int(state.get("engaged", planner.observed))
        if version < STATE_VERSION:
            planner._migrate(state)
            return planner
        planner.features = list(state["features"])
        planner._mean = np.asarray(state["mean"], dtype=float)
        planner._cov = np.asarray(state["cov"], dtype=float).reshape(len(planner.features), -1)
        planner.tried = {str(k): int(v) for k, v in state.get("tried", {}).items()}
        planner.picked = {str(k): int(v) for k, v in state.get("picked", {}).items()}
        for name, (mean, variance) in dict(state.get("priors", {})).items():
            planner._priors[str(name)] = (float(mean), float(variance))
        planner.level_set = bool(state.get("level_set", False))
        planner._noise_ss = float(state.get("noise_ss", 0.0))
        planner._noise_n = float(state.get("noise_n", 0.0))
        planner.disliked_seen = int(state.get("disliked_seen", 0))
        planner._surprise = float(state.get("surprise", 0.0))
        planner.set_options(state["kinds"], state["tones"], state["topics"])
        return planner

    def _migrate(self, state: Mapping[str, Any]) -> None:
        """Keep what an earlier planner (information form, no hour effects) learned about kinds, tones and topics:
        their posterior means and sds become this planner's; the level is learned again from the next drop."""
        features = list(state["features"])
        precision = np.asarray(state["precision"], dtype=float).reshape(len(features), -1)
        target = np.asarray(state["target"], dtype=float)
        try:
            covariance = np.linalg.inv(precision)
        except np.linalg.LinAlgError:
            _log.warning("planner state v%s could not be read; learning afresh", state.get("version", 1))
            return
        mean = covariance @ target
        groups = ("kind", "tone", "topic")
        # An option never tried kept its prior variance, the largest in its group; the others were tried.
        widest = {
            group: max((covariance[i, i] for i, f in enumerate(features) if f.startswith(f"{group}:")), default=0.0)
            for group in groups
        }
        for i, name in enumerate(features):
            group = name.split(":", 1)[0]
            if group in groups:
                self._ensure_feature(name)
                j = self.features.index(name)
                self._mean[j] = mean[i]
                self._cov[j, j] = min(float(covariance[i, i]), self._prior_variance(name))
                if covariance[i, i] < 0.8 * widest[group]:
                    self.tried[name] = 1
        _log.info("planner state v%s migrated to v%s", state.get("version", 1), STATE_VERSION)
