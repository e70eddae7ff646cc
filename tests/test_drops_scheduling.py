"""Schedule management: /drops enable, pause, resume, disable and topics keep exactly one job per channel in
step with its settings; wrong input gets a short, useful error; DST keeps local times; the auto hour follows the
channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from drops_support import BOB, Clock, Drops, drops_settings, start_drops
from sqlalchemy import update

from adapters.terminal.translate import CONVERSATION
from bots.events import Activity, Command
from scheduler.models import DropChannel
from scheduler.schedule import build_schedule, fire_times, parse_clock, parse_quiet
from scheduler.service import sync_url
from support import reply_text


@pytest.fixture
async def drops(tmp_path: Path) -> AsyncIterator[Drops]:
    running = await start_drops(drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0)))
    yield running
    await running.bot.chorus.close()


async def test_enable_schedules_one_job_and_enabling_again_updates_it(drops: Drops) -> None:
    text = await drops.say("/drops enable --time 09:30 --tz europe/berlin --kinds prompt,question")
    assert "Drops are on here: daily at 09:30 Europe/Berlin" in text
    assert "Kinds: prompt, question" in text
    [job] = drops.jobs()
    assert job.next_run_time.astimezone(job.trigger.timezone).strftime("%H:%M") == "09:30"
    text = await drops.say('/drops enable --cadence "15 7 * * 1-5" --tz America/New_York')
    assert text.startswith("Updated drops here")
    [job] = drops.jobs()
    local = job.next_run_time.astimezone(job.trigger.timezone)
    assert (local.hour, local.minute, local.weekday() < 5) == (7, 15, True)
    status = await drops.say("/drops status")
    assert 'cron "15 7 * * 1-5" America/New_York' in status and "kinds: prompt, question" in status


async def test_bad_input_gets_short_useful_errors(drops: Drops) -> None:
    cases = {
        "/drops enable --tz Europe/Berlinn": "Did you mean Europe/Berlin",
        "/drops enable --tz Mars/Olympus": "Unknown time zone 'Mars/Olympus'. Use an IANA name",
        "/drops enable --tz PST": "Did you mean America/Los_Angeles?",
        '/drops enable --cadence "61 9 * * *"': "Invalid cron '61 9 * * *'",
        "/drops enable --cadence hourly": "Unknown cadence 'hourly'",
        "/drops enable --quiet 08:00-08:00": "cover the whole day",
        "/drops enable --quiet 00:00-24:00": "cover the whole day",
        "/drops enable --time 25:00": "--time must be auto or HH:MM",
        "/drops enable --time 23:00 --quiet 22:00-08:00": "inside the quiet hours",
        "/drops enable --quiet 25:00-08:00": "--quiet must be HH:MM",
        "/drops enable --quiet 22-8": "--quiet must be HH:MM-HH:MM, e.g. 22:00-08:00 or 10pm-8am (got '22-8')",
        "/drops enable --time 13pm": "--time must be auto or HH:MM",
        "/drops enable --time 18": "e.g. 09:30, 18:00 or 9pm",
        "/drops enable --quiet late": "--quiet takes a range like 22:00-08:00",
        '/drops enable --cadence "0 9 * * *" --time 10:00': "--time does not combine with a cron cadence",
        "/drops enable --kinds ,": "--kinds needs at least one kind",
        "/drops enable --tz": "--tz needs a value",
        "/drops enable daily": "Unexpected 'daily'",
        "/drops status now": "/drops status takes no options",
        "/drops topics rename tea": "Unknown topics action 'rename'",
        "/drops topics add": "Say which topics",
        "/drops enable --kinds poem,questoin": "Did you mean 'question'",
        "/drops enable --colour red": "Unknown option --colour",
        '/drops enable --cadence "0 9 * * *': "Quote a cron",
        "/drops launch": "Unknown /drops sub-command",
        "/drops pause": "Drops are not enabled here",
        '/drops enable --cadence "0 9 31 2 *"': "The cron '0 9 31 2 *' never fires",
        '/drops enable --cadence "* 18 * * *"': "fires more than once an hour (18:00, 18:01, …)",
        '/drops enable --cadence "*/15 9-17 * * 1-5"': "drops post at most hourly",
        "/drops enable --cadence 0 18 * * 1": 'Quote a cron cadence: --cadence "0 18 * * 1"',
        '/drops enable --cadence "0 3 * * *" --quiet 22:00-08:00': "fires only inside the quiet hours 22:00-08:00",
        '/drops enable --cadence "@often"': "Unknown cadence '@often'",
        '/drops enable --cadence "0 0 18 * * MON-FRI"': "has 6 fields; drops take cron's 5",
    }
    for line, expected in cases.items():
        [reply] = await drops.bot.say(line)
        assert reply.ephemeral and expected in reply_text(reply), (line, reply_text(reply))
    assert drops.jobs() == [], "nothing was scheduled by a rejected command"


async def test_cron_shorthands_work_and_a_cron_stored_earlier_keeps_working(drops: Drops) -> None:
    assert 'cron "0 0 * * *" UTC' in await drops.say("/drops enable --cadence @daily")
    reply = await drops.say("/drops enable --time 10:00")
    assert 'this channel\'s cadence is "0 0 * * *"; --cadence daily changes it' in reply
    # A cron these checks would now refuse, stored by an earlier version, still runs and can be changed around.
    async with drops.bot.store.session() as session, session.begin():
        await session.execute(update(DropChannel).values(cadence="*/15 9-17 * * 1-5"))
    assert 'cron "*/15 9-17 * * 1-5"' in await drops.say("/drops status")
    assert "Updated drops here" in await drops.say("/drops enable --tz Europe/Berlin")


async def test_the_next_drop_shown_is_never_one_the_quiet_hours_skip(drops: Drops) -> None:
    # Hourly, quiet for all but 09:00: whatever the time now, the next drop that will post is at 09:00.
    reply = await drops.say('/drops enable --cadence "0 * * * *" --quiet 10:00-09:00')
    assert "09:00 UTC." in reply, reply
    assert "Next drop: " in (status := await drops.say("/drops status")) and "09:00 UTC" in status, status


def test_times_are_read_the_ways_people_write_them() -> None:
    written = {
        "18:30": (18, 30), "9:05": (9, 5), "18.30": (18, 30), "18h30": (18, 30), "18h": (18, 0), "9am": (9, 0),
        "9pm": (21, 0), "9:30pm": (21, 30), "9.30 p.m.": (21, 30), "12am": (0, 0), "12pm": (12, 0), "7 AM": (7, 0),
    }  # fmt: skip
    assert {text: parse_clock(text) for text in written} == written
    assert parse_quiet("10pm-8am") == (22, 8)


async def test_a_time_zone_can_be_named_by_its_city(drops: Drops) -> None:
    await drops.say("/drops enable --time 9pm --tz berlin")
    assert "daily at 21:00 Europe/Berlin" in await drops.say("/drops status")


async def test_drops_help_shows_how_to_use_it(drops: Drops) -> None:
    [reply] = await drops.bot.say("/drops help")
    assert reply.ephemeral and "/drops enable" in reply_text(reply) and "Unknown" not in reply_text(reply)


async def test_configuring_drops_needs_a_moderator(drops: Drops) -> None:
    await drops.say("/drops enable")
    for text in ("enable --time 10:00", "pause", "now", "topics add tea"):
        await drops.bot.chorus.handle(Command(CONVERSATION, BOB, "drops", text), drops.bot.responder)
        assert "Only moderators" in reply_text(drops.bot.responder.replies[-1])
    await drops.bot.chorus.handle(Command(CONVERSATION, BOB, "drops", "status"), drops.bot.responder)
    assert "Schedule: daily" in reply_text(drops.bot.responder.replies[-1])


async def test_pause_resume_disable_add_and_remove_the_job(drops: Drops) -> None:
    await drops.say("/drops enable --time 08:00")
    assert "paused" in await drops.say("/drops pause")
    assert drops.jobs() == []
    assert "Paused: paused by a moderator" in await drops.say("/drops status")
    assert "Next:" in await drops.say("/drops resume")
    assert len(drops.jobs()) == 1
    await drops.say("/drops disable")
    assert drops.jobs() == []
    assert "Drops are off here" in await drops.say("/drops status")


def test_a_0900_drop_stays_at_0900_local_across_dst_changes() -> None:
    schedule = build_schedule("daily", "09:00", "Europe/Berlin", "")
    spring = fire_times(schedule.trigger(9), datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    assert [t.astimezone(schedule.zone).strftime("%d %H:%M") for t in spring] == [
        "27 09:00",
        "28 09:00",
        "29 09:00",
        "30 09:00",
    ]
    assert [t.astimezone(UTC).hour for t in spring] == [8, 8, 7, 7]
    # 02:30 happens twice when clocks go back (25 Oct 2026): the drop still posts once that day.
    night = build_schedule("daily", "02:30", "Europe/Berlin", "")
    autumn = fire_times(night.trigger(2), datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC))
    assert [t.astimezone(night.zone).day for t in autumn] == [24, 25, 26]


async def test_apostrophes_and_smart_quotes_mean_what_people_typed(drops: Drops) -> None:
    # Topics went through shell quoting: "children's books, mother's day" became "childrens books" and "mothers day",
    # one apostrophe was "No closing quotation", and a phone's “curly” cron quotes gave "Unexpected '9'".
    await drops.say("/drops enable")
    topics = await drops.say('/drops topics add children\'s books, mother’s day, "rainy days", “tea”')
    assert topics.endswith("children's books, mother’s day, rainy days, tea.")
    assert "children's books" in await drops.say("/drops topics add children's books")
    assert "children's books" not in await drops.say("/drops topics remove children's books")
    assert 'cron "0 9 * * 1-5"' in await drops.say("/drops enable --cadence “0 9 * * 1-5”")
    assert 'cron "0 8 * * 1-5"' in await drops.say("/drops enable --cadence ‘0 8 * * 1-5’")


async def test_topics_are_limited_in_length_and_number_and_the_refusal_says_the_limits(drops: Drops) -> None:
    await drops.say("/drops enable")
    pasted = "a whole paragraph pasted by mistake " * 4
    refused = await drops.say(f"/drops topics add tea, {pasted}")
    assert "at most 100 characters" in refused
    assert "tea" not in await drops.say("/drops topics list"), "nothing is added when one topic is refused"
    listed = await drops.say("/drops topics list")
    have = len(listed.removeprefix("Topics: ").split(". ")[0].split(", "))
    many = ", ".join(f"topic {i}" for i in range(25 - have))
    assert (await drops.say(f"/drops topics add {many}")).count(", ") == 24
    refused = await drops.say("/drops topics add one too many")
    assert "at most 25 drop topics" in refused and "/drops topics remove" in refused
    assert "one too many" not in await drops.say("/drops topics list")


async def test_kinds_may_be_listed_with_spaces_after_the_commas(drops: Drops) -> None:
    # "--kinds prompt, idea" was answered "Unexpected 'idea'".
    enabled = await drops.say("/drops enable --kinds prompt, idea ,question --time 09:00")
    assert "Kinds: prompt, idea, question." in enabled


async def test_topics_and_opt_in_theme_learning(drops: Drops) -> None:
    await drops.say("/drops enable")
    assert (await drops.say("/drops topics add tea")).endswith(", tea.")
    assert "tea" not in await drops.say("/drops topics remove tea")
    assert "Not a topic here: coffee" in await drops.say("/drops topics remove coffee")
    assert "learning from messages: off" in await drops.say("/drops status")
    chorus, responder = drops.bot.chorus, drops.bot.responder
    for _ in range(3):
        await chorus.handle(Activity(CONVERSATION, BOB, datetime.now(UTC), text="gardening tips please"), responder)
    assert not drops.service._mined, "a channel that did not opt in has no word counted, even in memory"
    await drops.service.flush_activity()
    assert "gardening" not in await drops.say("/drops topics list"), "content is ignored until opted in"
    assert "Topic learning is on" in await drops.say("/drops topics learn on")
    for _ in range(3):
        await chorus.handle(Activity(CONVERSATION, BOB, datetime.now(UTC), text="gardening tips please"), responder)
    await drops.service.flush_activity()
    assert "Learned from the channel: gardening" in await drops.say("/drops topics list")
    assert "learning from messages: on" in await drops.say("/drops status")


async def test_a_restarted_process_counts_an_opted_in_channels_words_before_its_first_flush(tmp_path: Path) -> None:
    settings, clock = drops_settings(tmp_path), Clock(datetime.now(UTC).replace(microsecond=0))
    first = await start_drops(settings, clock)
    try:
        await first.say("/drops enable")
        assert "Topic learning is on" in await first.say("/drops topics learn on")
    finally:
        await first.bot.chorus.close()
    again = await start_drops(settings, clock)
    try:
        activity = Activity(CONVERSATION, BOB, datetime.now(UTC), text="gardening tips please")
        await again.bot.chorus.handle(activity, again.bot.responder)
        assert again.service._mined[CONVERSATION.key]["gardening"] == 1
    finally:
        await again.bot.chorus.close()


async def test_auto_time_moves_the_next_drop_to_the_busiest_hour(drops: Drops) -> None:
    await drops.say("/drops enable --tz UTC")
    busy = datetime(2026, 11, 30, 20, 10, tzinfo=UTC)
    for day in range(7):
        for _ in range(10):
            await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, busy - timedelta(days=day)), drops.bot.responder)
    await drops.service.flush_activity()
    await drops.service.run_slot(CONVERSATION.key)
    [job] = drops.jobs()
    slot = (await drops.runs())[-1].scheduled_for
    assert job.next_run_time.hour in range(18, 23) and job.next_run_time.date() > slot.date()


async def test_moving_the_auto_hour_later_reports_no_missed_drop(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 18, 0, 5, tzinfo=UTC))  # the default 18:00 slot, before activity is known
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say("/drops enable")
        for day in range(7):
            for _ in range(10):
                at = datetime(2026, 11, 29, 21, 30, tzinfo=UTC) - timedelta(days=day)
                await drops.bot.chorus.handle(Activity(CONVERSATION, BOB, at), drops.bot.responder)
        await drops.service.flush_activity()
        await drops.service.run_slot(CONVERSATION.key)
        [job] = drops.jobs()
        next_at = job.next_run_time.astimezone(UTC)
        assert next_at.date() == datetime(2026, 12, 1).date() and next_at.hour in (20, 21, 22)
        clock.current = next_at + timedelta(seconds=2)
        await drops.service.run_slot(CONVERSATION.key)
        assert [run.status for run in await drops.runs()] == ["posted", "posted"]
        assert "Missed" not in await drops.say("/drops status")
    finally:
        await drops.bot.chorus.close()


def test_the_job_store_uses_the_stores_database_through_a_sync_driver(tmp_path: Path) -> None:
    assert sync_url(f"sqlite+aiosqlite:///{tmp_path}/c.db") == f"sqlite:///{tmp_path}/c.db"
    assert sync_url("postgresql+asyncpg://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    with pytest.raises(ValueError, match="in-memory"):
        sync_url("sqlite+aiosqlite://")


async def test_slots_skipped_in_quiet_hours_are_one_status_line_and_leave_the_drops_in_recent(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, 8, 0, 30, tzinfo=UTC))
    drops = await start_drops(drops_settings(tmp_path), clock)
    try:
        await drops.say('/drops enable --cadence "0 * * * *" --quiet 10:00-09:00')  # posts at 09:00 only
        for _ in range(12):  # 08:00, 09:00 (posted), 10:00 … 19:00
            await drops.service.run_slot(CONVERSATION.key)
            clock.advance(hours=1)
        assert [run.status for run in await drops.runs()].count("skipped") == 11
        status = await drops.say("/drops status")
        assert "Skipped in quiet hours: 11 (latest Tue 2026-12-01 19:00 UTC)" in status, status
        recent = status.split("Recent:", 1)[1]
        assert "posted" in recent and "quiet hours" not in recent, status
    finally:
        await drops.bot.chorus.close()
