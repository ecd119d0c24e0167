"""subscriber_csv.py: the import format, each bad row reported by its line, the rest kept."""

from __future__ import annotations

from datetime import UTC, datetime

from newsletter.model import ImportRow, Subscriber
from newsletter.subscriber_csv import read_rows, write_rows

KNOWN = ["beslissers", "bouwers"]


def test_rows_without_a_header_and_a_bom() -> None:
    rows, lines, problems = read_rows("\ufeffanna@example.nl,Anna,beslissers;bouwers\n\nbob@example.nl\n", KNOWN)
    assert rows == [
        ImportRow("anna@example.nl", "Anna", ("beslissers", "bouwers")),
        ImportRow("bob@example.nl", "", None),  # no audiences: the import's defaults
    ]
    assert lines == [1, 3] and problems == []


def test_a_header_may_reorder_the_columns() -> None:
    rows, lines, _ = read_rows("audiences,email,name\nbouwers,cees@example.nl,Cees\n", KNOWN)
    assert rows == [ImportRow("cees@example.nl", "Cees", ("bouwers",))] and lines == [2]


def test_bad_rows_are_named_by_line_and_the_others_kept() -> None:
    text = (
        "anna@example.nl,Anna,beslissers\n"
        "bob@example.nl,Bob,beslissers,extra\n"
        ",Niemand,beslissers\n"
        "cees@example.nl,Cees,lezers\n"
        "dirk@example.nl,Dirk,bouwers\n"
    )
    rows, lines, problems = read_rows(text, KNOWN)
    assert [r.email for r in rows] == ["anna@example.nl", "dirk@example.nl"] and lines == [1, 5]
    assert [str(p) for p in problems] == [
        "line 2 'bob@example.nl': 4 columns; expected at most 3 (email,name,audiences)",
        "line 3: no e-mail address",
        "line 4 'cees@example.nl': unknown audience 'lezers'; known: beslissers, bouwers",
    ]
    assert all(p.bad for p in problems)


def test_an_unknown_column_stops_the_file() -> None:
    rows, _, problems = read_rows("email,naam\nanna@example.nl,Anna\n", KNOWN)
    assert rows == [] and [str(p) for p in problems] == [
        "line 1: unknown column 'naam'; use email, name, audiences"]


def test_exported_rows_that_are_not_active_are_skipped_not_errors() -> None:
    text = "email,name,audiences,status\na@example.nl,A,bouwers,active\nb@example.nl,B,bouwers,unsubscribed\n"
    rows, lines, problems = read_rows(text, KNOWN)
    assert [r.email for r in rows] == ["a@example.nl"] and lines == [2]
    (skipped,) = problems
    assert not skipped.bad and str(skipped) == "line 3 'b@example.nl': status 'unsubscribed' in the file: not imported"


def test_export_round_trips_through_import() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    people = [
        (Subscriber(1, "anna@example.nl", "anna@example.nl", 'Anna "de" Vries, jr.', "active", now, now), ["beslissers"]),
        (Subscriber(2, "bob@example.nl", "bob@example.nl", "", "active", now, now), ["beslissers", "bouwers"]),
    ]
    rows, _, problems = read_rows("".join(write_rows(people)), KNOWN)
    assert problems == [] and rows == [
        ImportRow("anna@example.nl", 'Anna "de" Vries, jr.', ("beslissers",)),
        ImportRow("bob@example.nl", "", ("beslissers", "bouwers")),
    ]
