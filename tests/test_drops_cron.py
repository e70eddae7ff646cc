"""Cron cadences mean what cron means: 0 and 7 are Sunday, names work, a restricted day-of-month and weekday fire
on either; checked against croniter (a reference cron implementation) over a year that spans DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from drops_support import Clock, drops_settings, start_drops

from bots.errors import UserError
from scheduler.schedule import build_schedule, fire_times

EXPRESSIONS = [
    "0 18 * * 1,3,5",
    "15 7 * * 1-5",
    "0 9 * * 0",
    "0 9 * * 7",
    "0 18 * * 7",
    "0 18 * * SUN",
    "30 8 * * sun",
    "0 12 * * mon-fri",
    "0 9 * * MON-FRI",
    "0 20 * * sat,sun",
    "45 10 * * 5-7",
    "0 6 * * */2",
    "0 11 * * 1-5/2",
    "0 10 1,15 * *",
    "0 10 13 * 5",
    "0 21 * jan,jul mon",
    "*/15 9-17 * * 1-5",
    # Times inside the hours the clocks skip or repeat in some of the zones below.
    "30 2 * * *",
    "0 1-3 * * 0",
    "15 1 * * *",
]
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "UTC"]


def _reference(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire times in [start, end) by croniter over the local calendar (wall-clock times, no zone), each made an
    instant by the documented DST rule: a repeated wall time fires once, at its first occurrence; a skipped one
    (02:30 on a spring-forward day) fires as far after it as the clocks jumped (03:30), and so once with 03:00 when
    both 02:00 and 03:00 are due."""
    tz = ZoneInfo(zone)
    local_start = start.astimezone(tz).replace(tzinfo=None) - timedelta(minutes=1)
    it = croniter(expression, local_start)
    out: list[datetime] = []
    while True:
        wall = it.get_next(datetime)
        at = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first of a repeated time, the old offset in a gap
        if at >= end:
            return out
        if at >= start and (not out or at != out[-1]):
            out.append(at)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_cron_cadences_fire_when_cron_fires_for_a_year_across_dst(expression: str, zone: str) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    schedule = build_schedule(expression, "auto", zone, "")
    fired = fire_times(schedule.trigger(9), start - timedelta(microseconds=1), end, limit=20_000)
    ours = [at.astimezone(UTC) for at in fired if at < end]
    assert ours == _reference(expression, zone, start, end)


def test_the_readme_example_fires_monday_wednesday_friday() -> None:
    schedule = build_schedule("0 18 * * 1,3,5", "auto", "America/New_York", "")
    week = fire_times(schedule.trigger(9), datetime(2026, 12, 6, tzinfo=UTC), datetime(2026, 12, 13, tzinfo=UTC))
    assert [at.astimezone(schedule.zone).strftime("%a %H:%M") for at in week] == ["Mon 18:00", "Wed 18:00", "Fri 18:00"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [("0 9 * * 8", "cannot read weekday '8'"), ("0 9 * * fri-mon", "runs backwards"), ("0 9 * * funday", "funday")],
)
def test_bad_weekdays_are_refused_with_the_reason(expression: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_schedule(expression, "auto", "UTC", "")


async def test_a_cron_with_day_and_weekday_is_stored_and_scheduled(tmp_path: Path) -> None:
    clock = Clock(datetime.now(UTC))  # APScheduler computes next run times on the real clock
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say('/drops enable --cadence "0 10 13 * fri" --tz Europe/Berlin')
        await drops.bot.chorus.close()
        drops = await start_drops(drops_settings(tmp_path), clock)  # the job is read back from the job store
        [job] = drops.jobs()
        local = job.next_run_time.astimezone(job.trigger.timezone)
        assert (local.hour, local.weekday() == 4 or local.day == 13) == (10, True)
        expected = fire_times(job.trigger, datetime.now(UTC), datetime.now(UTC) + timedelta(days=8))[0]
        assert job.next_run_time == expected
    finally:
        await drops.bot.chorus.close()
