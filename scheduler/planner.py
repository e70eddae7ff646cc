"""What to post, when and how often: a pure planner that learns one channel's taste from engagement.

No I/O and no clock of its own: `choose(now)` and `observe(plan, engagement)` are all a simulator or a test needs.
A drop's appeal is a logistic score over kind + tone + topic (one-hot, so every drop teaches all three). Each drop
gives two observations of it: the liked-event count with the hour's activity as exposure, and liked against 👎, which
divides the day's audience out. The Gaussian posterior is updated by an extended Kalman step and discounted, so
drifting tastes are followed. Choices are Thompson samples tilted towards what is still uncertain (an upper
confidence bound), for a small budget of drops. The hour is the channel's peak activity hour; now and then a
neighbouring hour is tried, and learned per-hour multipliers can move the time.
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
# Levels of the two observation models (not part of a drop's appeal): liked-event counts, and liked vs disliked.
_COUNT_BIAS = "level:count"
_RATIO_BIAS = "level:ratio"
# to_state's format; 1 (no "version" key) is still loaded.
STATE_VERSION = 2
# The log-count noise variance starts at 0.25, worth this many drops, so a few lucky repeats do not make it sure.
_NOISE_PRIOR_N = 10.0
# How many drops' worth of evidence the activity counts are worth for an hour's engagement multiplier.
_HOUR_PRIOR_N = 8.0


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


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(value, -30.0), 30.0)))


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


class Planner:
    """One channel's planner. Serialise with `to_state()` / `Planner.from_state()`; it holds no references out."""

    def __init__(
        self,
        kinds: Sequence[str],
        tones: Sequence[str],
        topics: Sequence[str],
        *,
        seed: int = 0,
        decay: float = 0.98,
        prior_sd: float = 0.5,
        exploration: float = 0.3,
        optimism: float = 1.0,
        fixed_hour: int | None = None,
        default_hour: int = 9,
        quiet: tuple[int, int] | None = None,
        hour_span: int = 1,
        hour_explore: float = 0.1,
        min_activity: int = 20,
        low_reward: float = 1.0,
        low_streak: int = 3,
        max_backoff: int = 3,
    ) -> None:
        if not kinds or not tones or not topics:
            raise ValueError("a planner needs at least one kind, one tone and one topic")
        self.seed = seed
        self.decay = decay
        self.prior_sd = prior_sd
        # Scales the posterior spread that Thompson sampling draws from (1.0 = textbook; less explores less).
        self.exploration = exploration
        self.optimism = optimism
        self.fixed_hour = fixed_hour
        self.default_hour = default_hour
        self.quiet = quiet
        self.hour_span = hour_span
        self.hour_explore = hour_explore
        self.min_activity = min_activity
        self.low_reward = low_reward
        self.low_streak = low_streak
        self.max_backoff = max_backoff
        self.features: list[str] = []
        # Prior means of the observation levels, centred on the first drop so a loose level does not leak into the
        # appeal of whatever was tried first (which would make the planner stick to it).
        self.level_means: dict[str, float] = {}
        self._precision = np.zeros((0, 0))
        self._target = np.zeros(0)
        self.kinds: list[str] = []
        self.tones: list[str] = []
        self.topics: list[str] = []
        self.set_options(kinds, tones, topics)
        # Counts by weekday (0 = Monday) × hour in the channel's zone.
        self.activity = np.zeros((7, 24))
        # Per-hour multiplier on expected engagement, learned from drops posted at that hour (discounted).
        self._hour_n = np.zeros(24)
        self._hour_sum = np.zeros(24)
        self._noise = 0.25
        self._residual_ss = 0.0
        self._residual_n = 0.0
        self._abs_sum = 0.0
        self._weight = 0.0
        self.observed = 0
        self.chosen = 0
        self.backoff = 0
        self._low_run = 0
        self._slots_since_post = 0

    # -- configuration -------------------------------------------------------------------------------------------

    def set_options(self, kinds: Sequence[str], tones: Sequence[str], topics: Sequence[str]) -> None:
        """Change what may be chosen; what was learned about names that stay is kept."""
        self.kinds, self.tones, self.topics = list(dict.fromkeys(kinds)), list(dict.fromkeys(tones)), []
        self.topics = list(dict.fromkeys(topics))
        # "bias" is the channel's average appeal, so the other weights say better or worse than usual; the two levels
        # carry the audience size and how readily people 👎.
        names = (
            ["bias", _COUNT_BIAS, _RATIO_BIAS] + [f"kind:{k}" for k in self.kinds] + [f"tone:{t}" for t in self.tones]
        )
        for name in names:
            self._ensure_feature(name)
        for topic in self.topics:
            self._ensure_feature(f"topic:{topic}")

    def _prior_sd(self, name: str) -> float:
        # The count and ratio levels (audience size, how often people 👎) are left loose; the appeal's own bias is
        # near 0; each kind, tone and topic starts near "average".
        if name in (_COUNT_BIAS, _RATIO_BIAS):
            return 3.0
        return 1.0 if name == "bias" else self.prior_sd

    def _ensure_feature(self, name: str) -> None:
        if name in self.features:
            return
        n = len(self.features)
        precision = np.zeros((n + 1, n + 1))
        precision[:n, :n] = self._precision
        precision[n, n] = 1.0 / self._prior_sd(name) ** 2
        self._precision = precision
        self._target = np.append(self._target, 0.0)
        self.features.append(name)

    def record_activity(self, weekday: int, hour: int, count: int = 1) -> None:
        """A channel message at this local weekday and hour (counts only, never text)."""
        self.activity[weekday % 7, hour % 24] += count

    # -- choosing ------------------------------------------------------------------------------------------------

    def _rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.chosen, salt])

    def _vector(self, kind: str, tone: str, topic: str) -> np.ndarray:
        x = np.zeros(len(self.features))
        for name in ("bias", f"kind:{kind}", f"tone:{tone}", f"topic:{topic}"):
            if name in self.features:
                x[self.features.index(name)] = 1.0
        return x

    def _unit(self, name: str) -> np.ndarray:
        x = np.zeros(len(self.features))
        x[self.features.index(name)] = 1.0
        return x

    def _prior_mean(self) -> np.ndarray:
        return np.array([self.level_means.get(f, 0.0) for f in self.features])

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        covariance = np.linalg.inv(self._precision)
        prior = np.array([1.0 / self._prior_sd(f) ** 2 for f in self.features])
        return covariance @ (self._target + prior * self._prior_mean()), covariance

    def activity_profile(self, weekday: int | None = None) -> np.ndarray:
        """Relative activity per hour (peak = 1), smoothed over neighbouring hours; all ones without data."""
        hours = self.activity.sum(axis=0)
        if weekday is not None:
            hours = hours / 7.0 + self.activity[weekday % 7]  # that weekday, leaning on the week's shape
        if self.activity.sum() < self.min_activity:
            return np.ones(24)
        smooth = 0.5 * hours + 0.25 * np.roll(hours, 1) + 0.25 * np.roll(hours, -1)
        return smooth / smooth.max() if smooth.max() > 0 else np.ones(24)

    def peak_hour(self, weekday: int | None = None) -> int | None:
        """The busiest allowed hour, or None before enough activity was counted."""
        if self.activity.sum() < self.min_activity:
            return None
        profile = self.activity_profile(weekday)
        allowed = [h for h in range(24) if h not in quiet_hours(self.quiet)]
        return max(allowed, key=lambda h: profile[h]) if allowed else None

    def _choose_hour(self, weekday: int) -> tuple[int, str]:
        if self.fixed_hour is not None:
            return self.fixed_hour, "fixed"
        peak = self.peak_hour(weekday)
        if peak is None:
            return self.default_hour, "default"
        quiet = quiet_hours(self.quiet)
        profile = self.activity_profile(weekday)
        candidates = [
            (peak + d) % 24 for d in range(-self.hour_span, self.hour_span + 1) if (peak + d) % 24 not in quiet
        ]
        rng = self._rng(1)
        n = self._hour_n[candidates]
        # Multiplier posterior per hour: prior mean 1 (trust the activity counts, worth _HOUR_PRIOR_N noisy drops),
        # so one lucky day does not drag the posting time away from the peak.
        # The multiplier is exp of the mean log-residual of drops at that hour, shrunk towards 0.
        mean = self._hour_sum[candidates] / (_HOUR_PRIOR_N + n)
        sd = 0.15 * np.sqrt(_HOUR_PRIOR_N / (_HOUR_PRIOR_N + n))
        best = int(np.argmax(profile[candidates] * np.exp(mean)))
        # Most drops go to the best hour known; now and then (hour_explore) a nearby hour, Thompson-sampled, is
        # tried, which costs far less than sampling every time when the neighbours are nearly as busy.
        if len(candidates) > 1 and rng.random() < self.hour_explore:
            sampled = profile[candidates] * np.exp(mean + sd * rng.standard_normal(len(candidates)))
            sampled[best] = -math.inf
            return candidates[int(np.argmax(sampled))], "explore"
        return candidates[best], "peak"

    def choose_hour(self, day: datetime) -> tuple[int, str]:
        """The local hour to post at on `day` (channel-local), and why: for scheduling the next auto drop."""
        return self._choose_hour(day.weekday())

    def choose(self, now: datetime, *, hour: int | None = None) -> DropPlan:
        """The drop for the slot at `now` (channel-local time): content, hour, and whether to post at all. `hour` is
        the hour the slot was scheduled at (chosen earlier with `choose_hour`); without it the hour is chosen now."""
        if hour is None:
            hour, reason = self._choose_hour(now.weekday())
        else:
            reason = "fixed" if self.fixed_hour is not None else "scheduled"
        mean, covariance = self._posterior()
        rng = self._rng(0)
        spread = self.exploration
        sample = mean + spread * rng.multivariate_normal(np.zeros(len(mean)), covariance, method="cholesky")
        combos = [(k, t, p) for k in self.kinds for t in self.tones for p in self.topics]
        design = np.array([self._vector(*combo) for combo in combos])
        # Thompson sample plus an optimism bonus for what is still uncertain (an upper confidence bound).
        scores = design @ sample
        if self.optimism:
            scores = scores + self.optimism * np.sqrt(np.einsum("ij,jk,ik->i", design, covariance, design))
        best = combos[int(np.argmax(scores))]
        self.chosen += 1
        self._slots_since_post += 1
        post = self._slots_since_post > self.backoff
        if post:
            self._slots_since_post = 0
        return DropPlan(*best, hour=hour, post=post, hour_reason=reason)

    # -- learning ------------------------------------------------------------------------------------------------

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
            liked, disliked = max(value, 0.0), None
        else:
            value = engagement_reward(engagement, reaction_weights) if reward is None else float(reward)
            liked, disliked = engagement_counts(engagement, reaction_weights)
        self.observed += 1
        profile = self.activity_profile()
        reach = max(float(profile[plan.hour % 24]), 0.05)
        x = self._vector(plan.kind, plan.tone, plan.topic)
        count_bias = self._unit(_COUNT_BIAS)
        if not self.level_means:
            # What the first drop got is what an average one (eta = 0) gets: sigmoid(0) = 1/2 with 👎 counts.
            self.level_means[_COUNT_BIAS] = math.log(liked + 0.5) - math.log(reach)
            if disliked is not None:
                self.level_means[_COUNT_BIAS] -= math.log(0.5)
                self.level_means[_RATIO_BIAS] = math.log((liked + 0.5) / (disliked + 0.5))
        mean, _ = self._posterior()
        # The drop's appeal is a logistic score eta = x . w (what the audience thinks of kind, tone and topic).
        eta = float(mean @ x)
        if disliked is None:
            # A bare reward has no 👎 to set the scale against: plain log-linear, log(reward) = level + eta.
            log_appeal, slope = eta, 1.0
        else:
            log_appeal, slope = math.log(_sigmoid(eta)), max(1.0 - _sigmoid(eta), 0.05)
        # 1) Liked events are a count with the hour's activity as exposure: log(liked) = level + log(reach) +
        #    log sigmoid(eta) + the day's noise, linearised around the current estimate (an extended Kalman step).
        z_count = math.log(liked + 0.5) - math.log(reach)
        residual = z_count - float(mean @ count_bias) - log_appeal
        self._residual_ss = self.decay * self._residual_ss + residual**2
        self._residual_n = self.decay * self._residual_n + 1.0
        self._noise = max(0.01, (_NOISE_PRIOR_N * 0.25 + self._residual_ss) / (_NOISE_PRIOR_N + self._residual_n))
        rows = [(count_bias + slope * x, z_count - log_appeal + slope * eta, self._noise)]
        # 2) Liked against disliked divides the day's audience out: log(liked / disliked) = offset + eta.
        if disliked is not None:
            z_ratio = math.log((liked + 0.5) / (disliked + 0.5))
            rows.append((self._unit(_RATIO_BIAS) + x, z_ratio, 1.0 / (liked + 0.5) + 1.0 / (disliked + 0.5)))
        # Discount the past (drifting tastes) but never below the prior.
        prior = np.diag([1.0 / self._prior_sd(f) ** 2 for f in self.features])
        self._precision = prior + self.decay * (self._precision - prior)
        self._target = self.decay * self._target
        for h, y, variance in rows:
            self._precision = self._precision + np.outer(h, h) / variance
            self._target = self._target + h * y / variance
        if plan.hour_reason in ("peak", "explore", "scheduled"):
            self._hour_n *= self.decay
            self._hour_sum *= self.decay
            self._hour_n[plan.hour % 24] += 1
            self._hour_sum[plan.hour % 24] += min(max(residual, -2.0), 2.0)
        self._update_backoff(value)
        return value

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

    def learned(self, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """The best-rated kinds, tones and topics so far (posterior means), for /drops status; only ones tried."""
        mean, _ = self._posterior()
        prior = np.array([1.0 / self._prior_sd(f) ** 2 for f in self.features])
        tried = np.diag(self._precision) - prior > 0.25
        out: dict[str, list[tuple[str, float]]] = {}
        for group, names in (("kind", self.kinds), ("tone", self.tones), ("topic", self.topics)):
            indices = [(name, self.features.index(f"{group}:{name}")) for name in names]
            scored = [(name, float(mean[i])) for name, i in indices if tried[i]]
            out[group] = sorted(scored, key=lambda item: -item[1])[:top]
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "kinds": self.kinds,
            "tones": self.tones,
            "topics": self.topics,
            "config": {
                "seed": self.seed,
                "decay": self.decay,
                "prior_sd": self.prior_sd,
                "exploration": self.exploration,
                "optimism": self.optimism,
                "fixed_hour": self.fixed_hour,
                "default_hour": self.default_hour,
                "quiet": list(self.quiet) if self.quiet else None,
                "hour_span": self.hour_span,
                "hour_explore": self.hour_explore,
                "min_activity": self.min_activity,
                "low_reward": self.low_reward,
                "low_streak": self.low_streak,
                "max_backoff": self.max_backoff,
            },
            "features": self.features,
            "precision": self._precision.tolist(),
            "target": self._target.tolist(),
            "level_means": self.level_means,
            "activity": self.activity.tolist(),
            "hour_n": self._hour_n.tolist(),
            "hour_sum": self._hour_sum.tolist(),
            "noise": self._noise,
            "residual_ss": self._residual_ss,
            "residual_n": self._residual_n,
            "abs_sum": self._abs_sum,
            "weight": self._weight,
            "observed": self.observed,
            "chosen": self.chosen,
            "backoff": self.backoff,
            "low_run": self._low_run,
            "slots_since_post": self._slots_since_post,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Planner:
        config = dict(state["config"])
        config["quiet"] = tuple(config["quiet"]) if config.get("quiet") else None
        planner = cls(state["kinds"], state["tones"], state["topics"], **config)
        planner.features = list(state["features"])
        planner._precision = np.asarray(state["precision"], dtype=float).reshape(len(planner.features), -1)
        planner._target = np.asarray(state["target"], dtype=float)
        planner.level_means = {str(k): float(v) for k, v in state.get("level_means", {}).items()}
        planner.set_options(state["kinds"], state["tones"], state["topics"])
        planner.activity = np.asarray(state["activity"], dtype=float)
        if state.get("version", 1) >= STATE_VERSION:
            planner._hour_n = np.asarray(state["hour_n"], dtype=float)
            planner._hour_sum = np.asarray(state["hour_sum"], dtype=float)
        else:  # version 1 summed ratios, not log-residuals: start the hour multipliers afresh
            _log.info("planner state v%s migrated: hour multipliers reset", state.get("version", 1))
        planner._noise = float(state["noise"])
        planner._residual_ss = float(state["residual_ss"])
        planner._residual_n = float(state["residual_n"])
        planner._abs_sum = float(state["abs_sum"])
        planner._weight = float(state["weight"])
        planner.observed = int(state["observed"])
        planner.chosen = int(state["chosen"])
        planner.backoff = int(state["backoff"])
        planner._low_run = int(state["low_run"])
        planner._slots_since_post = int(state["slots_since_post"])
        return planner
