"""schedules.py: readable schedules and cron with day names -> APScheduler cron fields."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from newsletter.schedules import ScheduleError, parse_schedule

AMS = ZoneInfo("Europe/Amsterdam")


def fires(text: str, after: datetime, count: int = 3) -> list[datetime]:
    """The next fire times as APScheduler 3 itself computes them."""
    trigger = CronTrigger(**parse_schedule(text).cron_fields, timezone=AMS)
    times: list[datetime] = []
    previous = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire)
        previous, now = fire, fire + timedelta(seconds=1)
    return times


START = datetime(2026, 11, 28, 9, 0, tzinfo=AMS)  # a Saturday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mon 08:00", ["2026-11-30 08:00 Mon", "2026-12-07 08:00 Mon", "2026-12-14 08:00 Mon"]),
        ("Monday 8:00", ["2026-11-30 08:00 Mon", "2026-12-07 08:00 Mon", "2026-12-14 08:00 Mon"]),
        ("mon,thu 08:00", ["2026-11-30 08:00 Mon", "2026-12-03 08:00 Thu", "2026-12-07 08:00 Mon"]),
        ("daily 07:30", ["2026-11-29 07:30 Sun", "2026-11-30 07:30 Mon", "2026-12-01 07:30 Tue"]),
        ("weekdays 07:30", ["2026-11-30 07:30 Mon", "2026-12-01 07:30 Tue", "2026-12-02 07:30 Wed"]),
        ("monthly 1 09:00", ["2026-12-01 09:00 Tue", "2027-01-01 09:00 Fri", "2027-02-01 09:00 Mon"]),
        ("monthly last 09:00", ["2026-11-30 09:00 Mon", "2026-12-31 09:00 Thu", "2027-01-31 09:00 Sun"]),
        ("0 8 * * mon", ["2026-11-30 08:00 Mon", "2026-12-07 08:00 Mon", "2026-12-14 08:00 Mon"]),
        ("30 7 * * mon-fri", ["2026-11-30 07:30 Mon", "2026-12-01 07:30 Tue", "2026-12-02 07:30 Wed"]),
    ],
)
def test_fire_times_in_local_time(text: str, expected: list[str]) -> None:
    assert [t.strftime("%Y-%m-%d %H:%M %a") for t in fires(text, START)] == expected


def test_monday_0800_stays_0800_local_across_daylight_saving() -> None:
    # 2027-03-28 and 2026-10-25 are the switch Sundays: the UTC offset changes, local time not.
    spring = fires("mon 08:00", datetime(2027, 3, 20, tzinfo=AMS), 2)
    assert [(t.hour, t.utcoffset()) for t in spring] == [
        (8, timedelta(hours=1)),
        (8, timedelta(hours=2)),
    ]


@pytest.mark.parametrize(
    ("text", "fire", "key"),
    [
        ("mon 08:00", datetime(2026, 11, 30, 8, tzinfo=AMS), "2026-W49"),
        ("mon 08:00", datetime(2027, 1, 4, 8, tzinfo=AMS), "2027-W01"),
        ("sun 23:30", datetime(2026, 1, 4, 23, 30, tzinfo=AMS), "2026-W01"),  # ISO year, not calendar
        ("daily 07:30", datetime(2026, 11, 29, 7, 30, tzinfo=AMS), "2026-11-29"),
        ("weekdays 07:30", datetime(2026, 12, 1, 7, 30, tzinfo=AMS), "2026-12-01"),
        ("monthly 1 09:00", datetime(2026, 12, 1, 9, tzinfo=AMS), "2026-12"),
        ("0 8 * * mon", datetime(2026, 11, 23, 8, tzinfo=AMS), "2026-W48"),
        ("0 9 1 * *", datetime(2026, 12, 1, 9, tzinfo=AMS), "2026-12"),
    ],
)
def test_period_key_comes_from_the_fire_time(text: str, fire: datetime, key: str) -> None:
    assert parse_schedule(text).period_key(fire) == key


def test_period_key_uses_local_time_not_utc() -> None:
    # Monday 00:30 in Amsterdam is still Sunday in UTC: the local week counts.
    fire = datetime(2026, 11, 30, 0, 30, tzinfo=AMS)
    assert parse_schedule("mon 00:30").period_key(fire) == "2026-W49"
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("mon 00:30").period_key(fire.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("maandag 08:00", "unknown day"),
        ("mon 8", "HH:MM"),
        ("mon 24:00", "HH:MM"),
        ("mon,mon 08:00", "named twice"),
        ("monthly 31 09:00", "1..28"),
        ("monthly 09:00", "monthly 1 09:00"),
        ("daily", "use 'mon 08:00'"),
        ("0 8 * * 1", "day names"),  # cron: Monday; APScheduler: Tuesday -> refused
        ("0 8 * * 0-4", "day names"),
        ("0 8 * * xyz", "unknown day"),
        ("61 8 * * mon", "minute"),
        ("0 8 32 * *", "day of month"),
        ("0 8 * 13 *", "month"),
    ],
)
def test_bad_schedules_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("fire", "key"),
    [
        (datetime(2026, 12, 28, 8, tzinfo=AMS), "2026-W53"),  # 2026 has 53 ISO weeks
        (datetime(2027, 1, 4, 8, tzinfo=AMS), "2027-W01"),
        (datetime(2021, 1, 4, 8, tzinfo=AMS), "2021-W01"),  # after 2020-W53
        (datetime(2024, 12, 30, 8, tzinfo=AMS), "2025-W01"),  # a December Monday in week 1
    ],
)
def test_period_keys_around_new_year(fire: datetime, key: str) -> None:
    assert parse_schedule("mon 08:00").period_key(fire) == key
