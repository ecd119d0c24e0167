"""Pure: subscriber CSV files (`email,name,audiences`, audiences separated by `;`) <-> rows.

A header row is optional (recognised by its first cell `email`); columns may come in any order
when there is a header. Problems carry the CSV line number, so an editor can fix the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .model import ImportRow, Subscriber

COLUMNS = ("email", "name", "audiences")
OPTIONAL = ("status",)  # written by export; only "active" (or empty) rows are imported
_HEADERLESS = {name: index for index, name in enumerate(COLUMNS)}


@dataclass(frozen=True)
class RowProblem:
    line: int
    email: str
    reason: str
    bad: bool = True  # False: a deliberate skip (e.g. an exported unsubscribed row), not an error

    def __str__(self) -> str:
        shown = f" {self.email!r}" if self.email else ""
        return f"line {self.line}{shown}: {self.reason}"


def read_rows(
    text: str, known_audiences: Sequence[str]
) -> tuple[list[ImportRow], list[int], list[RowProblem]]:
    """(rows, the CSV line of each row, problems found before the store sees the rows).

    A row naming an unknown audience is a problem (listing the known ones); a row with an empty
    audiences cell gets the import's default audiences (`audiences=None`).
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    rows: list[ImportRow] = []
    lines: list[int] = []
    problems: list[RowProblem] = []
    order = _HEADERLESS
    known = set(known_audiences)
    first = True
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if first:
            first = False
            header = [cell.strip().lower() for cell in cells]
            if "email" in header:
                unknown = [h for h in header if h and h not in COLUMNS + OPTIONAL]
                if unknown:
                    problems.append(RowProblem(line, "", f"unknown column {unknown[0]!r}; use {', '.join(COLUMNS)}"))
                    return [], [], problems
                order = {name: header.index(name) for name in COLUMNS + OPTIONAL if name in header}
                continue
        email = _cell(cells, order.get("email"))
        if len(cells) > len(COLUMNS) and order == _HEADERLESS:
            problems.append(RowProblem(line, email, f"{len(cells)} columns; expected at most 3 (email,name,audiences)"))
            continue
        if not email:
            problems.append(RowProblem(line, "", "no e-mail address"))
            continue
        status = _cell(cells, order.get("status")).lower()
        if status not in ("", "active"):
            problems.append(RowProblem(line, email, f"status {status!r} in the file: not imported", bad=False))
            continue
        names = [a.strip() for a in _cell(cells, order.get("audiences")).split(";") if a.strip()]
        strange = [a for a in names if a not in known]
        if strange:
            problems.append(
                RowProblem(line, email, f"unknown audience {strange[0]!r}; known: {', '.join(sorted(known))}")
            )
            continue
        rows.append(ImportRow(email=email, name=_cell(cells, order.get("name")), audiences=tuple(names) or None))
        lines.append(line)
    return rows, lines, problems


def _cell(cells: Sequence[str], index: int | None) -> str:
    return cells[index].strip() if index is not None and index < len(cells) else ""


def write_rows(subscribers: Iterable[tuple[Subscriber, Sequence[str]]]) -> Iterator[str]:
    """CSV text, a header first, one line per (subscriber, its active audiences); streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, "status"])
    for subscriber, audiences in subscribers:
        writer.writerow([subscriber.email, subscriber.name, ";".join(audiences), subscriber.status])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
