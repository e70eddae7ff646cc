"""When a channel's drops fire: cadence, time, zone and quiet hours, checked and turned into APScheduler triggers.

Triggers are CronTriggers in the channel's IANA zone, so a 09:00 drop stays at 09:00 local across DST changes.
Every bad value becomes a UserError that says how to fix it.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from bots.errors import UserError
from scheduler.planner import quiet_hours

CADENCES = {"daily": "*", "weekdays": "mon-fri", "weekly": "mon"}
# cron's shorthands, as the 5-field crons they stand for.
CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
# Drops are at most hourly: each one's engagement is counted for a day, and a cron like "* 18 * * *" (every minute of
# 18:00-18:59, most likely meant as "0 18 * * *") would post sixty.
MIN_CRON_SPACING = timedelta(hours=1)
_CLOCK = re.compile(r"^(\d{1,2})(?:[:.h](\d{2}))?h?\s*(?:([ap])\.?m?\.?)?$")
# Cron counts weekdays from Sunday (0, and 7 again); APScheduler's day_of_week counts 0 as Monday, so a cron's
# weekday field is translated to names, which mean the same to both.
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_DAY_NAMES = {
    day[:3]: day for day in ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
}
_CRON_TOKEN = re.compile(r"^[0-9a-z*?,/#lw-]+$", re.IGNORECASE)
_CRON_DAY_PART = re.compile(r"^(\*|[0-7a-z]+)(?:-([0-7a-z]+))?(?:/(\d+))?$")


class CronEither(OrTrigger):
    """Cron's rule when both day-of-month and weekday are restricted: it fires on days matching either."""

    __slots__ = ()

    @property
    def timezone(self) -> ZoneInfo:
        return self.triggers[0].timezone


def _cron_day(token: str, field: str) -> int:
    """One weekday of a cron field: 0-7 (0 and 7 are Sunday; 7 is kept so "5-7" reads Friday to Sunday) or a name."""
    if token.isdigit():
        if int(token) > 7:
            raise ValueError(f"weekday {token} in {field!r} is out of range 0-7 (0 and 7 are Sunday)")
        return int(token)
    if token[:3] not in _CRON_DAYS or token not in (token[:3], _FULL_DAY_NAMES.get(token[:3])):
        raise ValueError(f"unknown weekday {token!r} in {field!r}; use 0-7 or sun-sat")
    return _CRON_DAYS.index(token[:3])


def cron_weekdays(field: str) -> list[int] | None:
    """A cron weekday field as the days it names (0 = Sunday … 6 = Saturday), or None for every day ("*")."""
    text = field.strip().lower()
    if text in ("*", "?"):
        return None
    days: set[int] = set()
    for part in text.split(","):
        match = _CRON_DAY_PART.match(part)
        if not match:
            raise ValueError(f"cannot read weekday {part!r} in {field!r}")
        first, last, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step 0 in {field!r}")
        if first == "*":
            start, end = 0, 6
        else:
            start = _cron_day(first, field)
            end = _cron_day(last, field) if last else (6 if step_text else start)
            if start == 7 and not last:
                start = end = 0
            if end < start:
                raise ValueError(f"range {part!r} in {field!r} runs backwards")
        days.update(day % 7 for day in range(start, end + 1, step))
    return sorted(days)


def cron_trigger(expression: str, zone: ZoneInfo) -> CronTrigger | CronEither:
    """A 5-field cron (minute hour day month weekday) with cron's meaning: 0 and 7 are Sunday, names work, and a
    restricted day-of-month and weekday together fire on either."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron has 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    days = cron_weekdays(weekday)
    names = ",".join(_CRON_DAYS[d] for d in days) if days is not None else "*"

    def make(day_of_month: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(
            minute=minute, hour=hour, day=day_of_month, month=month, day_of_week=day_of_week, timezone=zone
        )

    if days is not None and not day.startswith("*") and day != "?":
        return CronEither([make(day, "*"), make("*", names)])
    return make(day, names)


@cache
def _zones() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


# Abbreviations people type that are not zones of their own, and the zone most of them mean (with its summer time).
_ABBREVIATIONS = {
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles", "pt": "America/Los_Angeles",
    "edt": "America/New_York", "et": "America/New_York", "cst": "America/Chicago", "cdt": "America/Chicago",
    "mdt": "America/Denver", "bst": "Europe/London", "cest": "Europe/Paris", "ist": "Asia/Kolkata",
    "jst": "Asia/Tokyo", "aest": "Australia/Sydney", "aedt": "Australia/Sydney",
}  # fmt: skip


_REGIONS = frozenset(
    {"Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific"}
)


@cache
def _cities() -> dict[str, str]:
    """'berlin' -> 'Europe/Berlin', 'new york' -> 'America/New_York': the city part of each region/city zone."""
    found: dict[str, str] = {}
    for name in sorted(available_timezones()):
        area, _, city = name.rpartition("/")
        if area and area.split("/")[0] in _REGIONS:
            found.setdefault(city.replace("_", " ").lower(), name)
    return found


def parse_zone(value: str) -> ZoneInfo:
    """An IANA zone by name (any case) or by its city alone ("Berlin", "new_york"); unknown names get the closest
    real ones suggested."""
    typed = value.strip().lower()
    name = _zones().get(typed) or _cities().get(typed.replace("_", " "))
    if name is not None:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if typed in _ABBREVIATIONS:
        close = [_ABBREVIATIONS[typed]]
    else:
        close = [_zones()[c] for c in difflib.get_close_matches(typed, list(_zones()), n=3, cutoff=0.7)]
        close += [_cities()[c] for c in difflib.get_close_matches(typed.replace("_", " "), list(_cities()), n=2)]
    hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    raise UserError(f"Unknown time zone {value!r}.{hint} Use an IANA name such as Europe/Berlin or America/New_York.")


def parse_clock(value: str, option: str = "--time") -> tuple[int, int]:
    """(hour, minute) from the ways people write a time: 18:30, 9:05, 18.30, 18h30, 18h, 9am, 9:30pm, 12am."""
    match = _CLOCK.match(value.strip().lower())
    # A bare number is a time only with am/pm ("9am"); "18" alone is more likely a typo than 18:00.
    if match and (match.group(2) is not None or match.group(3) is not None or value.strip().lower().endswith("h")):
        hour, minute = int(match.group(1)), int(match.group(2) or 0)
        half = match.group(3)
        if half is not None:  # 12am is midnight, 12pm noon; "13pm" (made 24 here) is refused below
            hour = hour % 12 + (12 if half == "p" else 0) if 1 <= hour <= 12 else 24
        if hour < 24 and minute < 60:
            return hour, minute
    # Only --time takes "auto" (build_schedule handles it before this); --quiet's two ends are plain times.
    allowed = "auto or HH:MM" if option == "--time" else "HH:MM"
    raise UserError(f"{option} must be {allowed}, e.g. 09:30, 18:00 or 9pm (got {value!r}).")


def parse_quiet(value: str) -> tuple[int, int] | None:
    """'22:00-08:00' -> (22, 8) in whole hours (a partial hour counts as quiet); '' or 'off' -> None."""
    text = value.strip().lower()
    if text in ("", "off", "none"):
        return None
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise UserError(f"--quiet takes a range like 22:00-08:00 (got {value!r}); --quiet off removes it.")
    try:
        start_h, _start_m = parse_clock(start_text, "--quiet")
        end_h, end_m = (0, 0) if end_text.strip() == "24:00" else parse_clock(end_text, "--quiet")
    except UserError:  # quoted whole: "(got '22')" for --quiet 22-8 did not say which part was wrong
        raise UserError(f"--quiet must be HH:MM-HH:MM, e.g. 22:00-08:00 or 10pm-8am (got {value!r}).") from None
    end = (end_h + (1 if end_m else 0)) % 24
    if start_h == end or len(quiet_hours((start_h, end))) >= 24:
        raise UserError(
            f"Quiet hours {value} cover the whole day, so no drop could ever post. Leave some hours free, "
            "e.g. --quiet 22:00-08:00."
        )
    return start_h, end


@dataclass(frozen=True)
class Schedule:
    """A channel's validated schedule. `time` is 'auto' or 'HH:MM'; `cadence` a name or a 5-field cron."""

    cadence: str
    time: str
    tz: str
    quiet: tuple[int, int] | None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def is_cron(self) -> bool:
        return self.cadence not in CADENCES

    @property
    def fixed_hour(self) -> int | None:
        if self.is_cron or self.time == "auto":
            return None
        return parse_clock(self.time)[0]

    def trigger(self, auto_hour: int) -> CronTrigger | CronEither:
        """The trigger for this schedule; `auto_hour` is where the planner wants the next auto drop."""
        if self.is_cron:
            return cron_trigger(self.cadence, self.zone)
        if self.time == "auto":
            hour, minute = auto_hour, 0
        else:
            hour, minute = parse_clock(self.time)
        return CronTrigger(day_of_week=CADENCES[self.cadence], hour=hour, minute=minute, timezone=self.zone)

    @property
    def quiet_text(self) -> str:
        """The quiet hours as stored and shown ("22:00-08:00"), or "" when there are none."""
        return f"{self.quiet[0]:02d}:00-{self.quiet[1]:02d}:00" if self.quiet else ""

    def describe(self) -> str:
        when = self.cadence if not self.is_cron else f'cron "{self.cadence}"'
        at = "" if self.is_cron else (" at the busiest hour (auto)" if self.time == "auto" else f" at {self.time}")
        quiet = f", quiet {self.quiet_text}" if self.quiet else ""
        return f"{when}{at} {self.tz}{quiet}"


def parse_cadence(value: str, zone: ZoneInfo) -> str:
    text = value.strip()
    if text.lower() in CADENCES:
        return text.lower()
    text = CRON_MACROS.get(text.lower(), text)
    fields = text.split()
    if len(fields) in (6, 7) and all(_CRON_TOKEN.match(field) for field in fields):
        raise UserError(
            f"The cron {value!r} has {len(fields)} fields; drops take cron's 5 (minute hour day month weekday), with "
            'no seconds or year: e.g. --cadence "0 18 * * 1-5".'
        )
    if len(fields) != 5:
        raise UserError(
            f"Unknown cadence {value!r}. Use daily, weekdays, weekly or a quoted 5-field cron "
            '(minute hour day month weekday), e.g. --cadence "0 9 * * 1-5".'
        )
    try:
        cron_trigger(text, zone)
    except ValueError as exc:
        raise UserError(
            f'Invalid cron {value!r}: {exc}. Five fields: minute hour day month weekday, e.g. "0 9 * * 1-5".'
        ) from None
    return " ".join(fields)


def check_new_schedule(schedule: Schedule, *, cadence_changed: bool, quiet_changed: bool) -> None:
    """What `/drops enable` refuses on top of a valid schedule (a stored one keeps working as it is): a cron that
    never fires ("0 9 31 2 *"), one that fires more than once an hour ("* 18 * * *"), one whose every time falls in
    the quiet hours."""
    if not schedule.is_cron:
        return
    trigger = schedule.trigger(0)
    start = datetime(2024, 1, 1, tzinfo=UTC)  # a leap year: "0 9 29 2 *" fires in it
    if cadence_changed:
        _check_cron_fires(schedule.cadence, trigger, start)
    if (cadence_changed or quiet_changed) and schedule.quiet is not None:
        hours = {at.astimezone(schedule.zone).hour for at in fire_times(trigger, start, start + timedelta(days=366))}
        if hours <= quiet_hours(schedule.quiet):
            raise UserError(
                f"The cron {schedule.cadence!r} fires only inside the quiet hours {schedule.quiet_text}, so no drop "
                "could post. Change its hour, or the quiet hours (--quiet off removes them)."
            )


def _check_cron_fires(value: str, trigger: CronTrigger | CronEither, start: datetime) -> None:
    times = fire_times(trigger, start, start + timedelta(days=4 * 366), limit=400)
    if not times:
        raise UserError(f"The cron {value!r} never fires (no such date). Check its day and month fields.")
    for earlier, later in itertools.pairwise(times):
        if later - earlier < MIN_CRON_SPACING:
            zone = trigger.timezone
            first, second = (at.astimezone(zone).strftime("%H:%M") for at in (earlier, later))
            raise UserError(
                f"The cron {value!r} fires more than once an hour ({first}, {second}, …); drops post at most "
                'hourly. Give one minute, e.g. "0 18 * * 1-5" for 18:00 on weekdays.'
            )


def build_schedule(cadence: str, time: str, tz: str, quiet: str) -> Schedule:
    """Validate the four schedule options together (a fixed time inside quiet hours is refused)."""
    zone = parse_zone(tz)
    tz_name = str(zone.key)
    cadence = parse_cadence(cadence, zone)
    time = time.strip().lower()
    if time != "auto":
        hour, minute = parse_clock(time)
        time = f"{hour:02d}:{minute:02d}"
    quiet_range = parse_quiet(quiet)
    schedule = Schedule(cadence=cadence, time=time, tz=tz_name, quiet=quiet_range)
    if schedule.fixed_hour is not None and schedule.fixed_hour in quiet_hours(quiet_range):
        raise UserError(f"--time {time} falls inside the quiet hours {quiet}. Pick a time outside them.")
    return schedule


def fire_times(
    trigger: CronTrigger | CronEither, after: datetime, until: datetime, limit: int = 1000
) -> list[datetime]:
    """The trigger's fire times in (after, until], oldest first, one per local wall-clock time: when clocks go back
    and 02:30 happens twice, only the first counts (used to count drops missed while down)."""
    times: list[datetime] = []
    seen: set[str] = set()
    search = after + timedelta(microseconds=1)
    current = trigger.get_next_fire_time(None, search)
    while current is not None and current <= until and len(times) < limit:
        wall = slot_wall_time(current, trigger)
        if wall not in seen:
            seen.add(wall)
            times.append(current)
        # APScheduler can return the same ambiguous time again; always move forward.
        search = max(search, current) + timedelta(minutes=1)
        current = trigger.get_next_fire_time(current, search)
    return times


def slot_wall_time(at: datetime, trigger: CronTrigger | CronEither) -> str:
    """A slot's identity: its local wall-clock time, so the repeated hour of a DST change is one slot, not two.
    The time goes through UTC first: a time the trigger gives inside a spring-forward gap (02:30 that never happens)
    becomes the wall time it fires at (03:30), the same however the slot was computed."""
    return at.astimezone(UTC).astimezone(trigger.timezone).replace(tzinfo=None).isoformat(timespec="minutes")
