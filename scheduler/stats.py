"""/stats: one PNG (matplotlib, Agg) with the channel's activity heatmap, engagement by kind and tone, and the
last 30 days of drops, plus a few lines of text that say the same for people who do not open the image."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class StatsData:
    channel: str
    tz: str
    activity: Any  # 7 × 24 counts, weekday × local hour
    # (scheduled for, kind, tone, reward or None while counting, status)
    drops: list[tuple[datetime, str, str, float | None, str]] = field(default_factory=list)
    # The timeline's span (the last 30 days); None fits the drops.
    start: datetime | None = None
    end: datetime | None = None

    def by(self, index: int) -> dict[str, float]:
        """Mean engagement per kind (index 1) or tone (index 2), over drops whose window has closed."""
        groups: dict[str, list[float]] = defaultdict(list)
        for drop in self.drops:
            if drop[3] is not None:
                groups[str(drop[index])].append(drop[3])
        return {name: float(np.mean(values)) for name, values in sorted(groups.items())}

    def summary(self) -> str:
        activity = np.asarray(self.activity)
        total = int(activity.sum())
        messages = "message" if total == 1 else "messages"
        lines = [f"#{self.channel}: {total} {messages} counted (hour × weekday, {self.tz})."]
        if total:
            day, hour = np.unravel_index(int(activity.argmax()), activity.shape)
            busiest_hour = int(activity.sum(axis=0).argmax())
            lines.append(
                f"Busiest: {WEEKDAYS[int(day)]} {int(hour):02d}:00; busiest hour overall {busiest_hour:02d}:00."
            )
        posted = [d for d in self.drops if d[4] == "posted"]
        scored = [d for d in posted if d[3] is not None]
        lines.append(f"Drops in the last 30 days: {len(posted)} posted, {len(scored)} with engagement counted.")
        kinds = self.by(1)
        if kinds:
            best = max(kinds, key=kinds.__getitem__)
            lines.append(f"Best kind: {best} (mean engagement {kinds[best]:.1f}).")
        tones = self.by(2)
        if tones:
            best = max(tones, key=tones.__getitem__)
            lines.append(f"Best tone: {best} (mean engagement {tones[best]:.1f}).")
        return "\n".join(lines)


def render_stats(data: StatsData, path: Path) -> Path:
    """Draw the three panels into `path` (created with its directory) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter, date2num

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(11, 7.5), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1], hspace=0.45, wspace=0.25)
    fig.suptitle(f"#{data.channel} · activity and drops ({data.tz})", fontsize=13)

    heat = fig.add_subplot(grid[0, :])
    image = heat.imshow(np.asarray(data.activity), aspect="auto", cmap="viridis", interpolation="nearest")
    heat.set_yticks(range(7), WEEKDAYS)
    heat.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    heat.set_xlabel("hour")
    heat.set_title("messages by hour × weekday")
    fig.colorbar(image, ax=heat, fraction=0.025, pad=0.01)

    bars = fig.add_subplot(grid[1, 0])
    kinds, tones = data.by(1), data.by(2)
    labels = [f"kind: {k}" for k in kinds] + [f"tone: {t}" for t in tones]
    values = list(kinds.values()) + list(tones.values())
    if labels:
        colors = ["#4c72b0"] * len(kinds) + ["#dd8452"] * len(tones)
        bars.barh(range(len(labels)), values, color=colors)
        bars.set_yticks(range(len(labels)), labels, fontsize=8)
        bars.invert_yaxis()
    else:
        bars.text(0.5, 0.5, "no engagement counted yet", ha="center", va="center", transform=bars.transAxes)
        bars.set_xticks([])
        bars.set_yticks([])
    bars.set_title("mean engagement by kind and tone")

    timeline = fig.add_subplot(grid[1, 1])
    # Matplotlib's date axis takes day numbers (what it converts datetimes to anyway).
    scored = [(float(date2num(d[0])), d[3]) for d in data.drops if d[3] is not None]
    counting = [float(date2num(d[0])) for d in data.drops if d[3] is None and d[4] == "posted"]
    failed = [float(date2num(d[0])) for d in data.drops if d[4] == "failed"]
    if scored:
        timeline.plot(
            date2num([t for t, _ in scored]), [r for _, r in scored], "o-", color="#55a868", label="engagement"
        )
    if counting:
        timeline.plot(date2num(counting), [0] * len(counting), "o", mfc="none", color="#8172b3", label="still counting")
    if failed:
        timeline.plot(date2num(failed), [0] * len(failed), "x", color="#c44e52", label="failed")
    if scored or counting or failed:
        timeline.legend(fontsize=8, loc="upper left")
    else:
        timeline.text(0.5, 0.5, "no drops in the last 30 days", ha="center", va="center", transform=timeline.transAxes)
    timeline.set_title("drops, last 30 days")
    timeline.set_ylabel("engagement")
    if data.start is not None and data.end is not None:
        timeline.set_xlim(float(date2num(data.start)), float(date2num(data.end)))
    timeline.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    timeline.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
