"""Pure: an audience's `schedule` text -> cron fields and the period an issue belongs to.

Readable forms: `mon 08:00`, `mon,thu 08:00`, `daily 07:30`, `weekdays 07:30`,
`monthly 1 09:00`, `monthly last 09:00`; or a five-field cron expression whose day-of-week uses
names (`0 8 * * mon`). A numeric day of week is refused: APScheduler 3 counts Monday as 0 and
cron counts Sunday as 0, so `from_crontab('0 8 * * 1')` fires on Tuesday (standards SCHED-*).
The fields are what `apscheduler.triggers.cron.CronTrigger(**fields)` takes; this module does not
import APScheduler, so config validation stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .errors import NewsletterError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_CRON_DOW_TERM = re.compile(r"^(\*|[a-z]{3}(-[a-z]{3})?)(/\d+)?$")


class ScheduleError(NewsletterError):
    """A schedule text that cannot be read; the message says what would be accepted."""


@dataclass(frozen=True)
class Schedule:
    text: str  # as written in config.toml
    period: str  # "week", "day" or "month": what one issue covers, for its period key
    minute: str
    hour: str
    day: str = "*"
    month: str = "*"
    day_of_week: str = "*"

    @property
    def cron_fields(self) -> dict[str, str]:
        return {
            "minute": self.minute,
            "hour": self.hour,
            "day": self.day,
            "month": self.month,
            "day_of_week": self.day_of_week,
        }

    def period_key(self, fire_time: datetime) -> str:
        """The issue's period from its SCHEDULED fire time (local), never from the run's clock:
        ISO week `2026-W48`, day `2026-11-30` or month `2026-11`."""
        if fire_time.tzinfo is None:
            raise ValueError("fire_time must be timezone-aware (in the site timezone)")
        if self.period == "week":
            iso = fire_time.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        if self.period == "month":
            return f"{fire_time.year}-{fire_time.month:02d}"
        return fire_time.date().isoformat()


def parse_schedule(text: str) -> Schedule:
    """Read one schedule text.

    Raises:
        ScheduleError: naming the part that is wrong and the accepted forms.
    """
    words = text.strip().lower().split()
    if not words:
        raise ScheduleError("is empty; use e.g. 'mon 08:00'")
    if len(words) == 5:
        return _cron(text, words)
    head, rest = words[0], words[1:]
    if head == "monthly":
        if len(rest) != 2:
            raise ScheduleError(f"{text!r}: use 'monthly 1 09:00' or 'monthly last 09:00'")
        day = rest[0]
        if day != "last" and not (day.isdigit() and 1 <= int(day) <= 28):
            raise ScheduleError(
                f"{text!r}: day {day!r} must be 1..28 or 'last' (29-31 skip short months)"
            )
        hour, minute = _time(text, rest[1])
        return Schedule(text, "month", minute, hour, day=str(int(day)) if day.isdigit() else day)
    if len(rest) != 1:
        raise ScheduleError(f"{text!r}: {_FORMS}")
    hour, minute = _time(text, rest[0])
    if head == "daily":
        return Schedule(text, "day", minute, hour)
    if head == "weekdays":
        return Schedule(text, "day", minute, hour, day_of_week="mon-fri")
    days = [_day(text, part) for part in head.split(",")]
    if len(set(days)) != len(days):
        raise ScheduleError(f"{text!r}: a day is named twice")
    # One day a week is a weekly digest (period = ISO week); several days are daily issues.
    period = "week" if len(days) == 1 else "day"
    return Schedule(text, period, minute, hour, day_of_week=",".join(days))


_FORMS = (
    "use 'mon 08:00', 'mon,thu 08:00', 'daily 07:30', 'weekdays 07:30', 'monthly 1 09:00', "
    "'monthly last 09:00' or a cron expression with day names such as '0 8 * * mon'"
)


def _time(text: str, value: str) -> tuple[str, str]:
    match = _TIME.match(value)
    if not match:
        raise ScheduleError(f"{text!r}: time {value!r} must be HH:MM (24-hour, 00:00-23:59)")
    return str(int(match.group(1))), str(int(match.group(2)))


def _day(text: str, value: str) -> str:
    day = _LONG_DAYS.get(value, value)
    if day not in DAYS:
        raise ScheduleError(f"{text!r}: unknown day {value!r}; {_FORMS}")
    return day


def _cron(text: str, fields: list[str]) -> Schedule:
    minute, hour, day, month, dow = fields
    for name, value, low, high in (
        ("minute", minute, 0, 59),
        ("hour", hour, 0, 23),
        ("day of month", day, 1, 31),
        ("month", month, 1, 12),
    ):
        _check_numeric_field(text, name, value, low, high)
    for term in dow.split(","):
        if not _CRON_DOW_TERM.match(term):
            raise ScheduleError(
                f"{text!r}: day of week {dow!r} must use day names (mon..sun), not numbers: "
                "cron counts Sunday as 0 and APScheduler counts Monday as 0"
            )
        for part in re.findall(r"[a-z]{3}", term):
            _day(text, part)
    if day != "*" and dow == "*" and month == "*" and re.fullmatch(r"\d+|last", day):
        period = "month"
    elif dow != "*" and "," not in dow and "-" not in dow and "/" not in dow and day == "*":
        period = "week"
    else:
        period = "day"
    return Schedule(text, period, minute, hour, day=day, month=month, day_of_week=dow)


def _check_numeric_field(text: str, name: str, value: str, low: int, high: int) -> None:
    if name == "day of month" and value == "last":
        return
    for term in value.split(","):
        base, _, step = term.partition("/")
        if step and not step.isdigit():
            raise ScheduleError(f"{text!r}: bad step in {name} {value!r}")
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(b.isdigit() and low <= int(b) <= high for b in bounds):
            raise ScheduleError(f"{text!r}: {name} {value!r} must be {low}..{high}, '*' or a list")
