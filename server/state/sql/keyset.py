"""The upper bound of a keyset page, newest first: rows before `end` and, after a cursor, before the cursor's
(time, id).

The cursor is a row value, `(time_us, id) < (?, ?)`, which both backends take as a bound of the index on
(time_us, id) read backwards: the page starts at the cursor whatever its depth. Spelt `time_us < ? OR
(time_us = ? AND id < ?)`, PostgreSQL applies it as a filter to every newer row of the range first, so a
page costs as much as its depth (as with OFFSET).

SQLite bounds the index by the first upper bound on time_us it meets, so the row value comes first and the
range's end is left out when the cursor is before it (the row value implies it), the cursor when it is not.
The `time_us <= ?` after it, implied as well, bounds the other indexes that hold time_us after their own
column (device, person, camera, door) and PostgreSQL's partitions."""

from __future__ import annotations


def before(end_us: int, cursor: tuple[int, object] | None, id_column: str) -> tuple[str, list[object]]:
    """The SQL (and its parameters) of rows before `end_us` and before `cursor` (time_us, id), if any."""
    if cursor is None or cursor[0] >= end_us:
        return "time_us < ?", [end_us]
    time_us, row_id = cursor
    return f"(time_us, {id_column}) < (?, ?) AND time_us <= ?", [time_us, row_id, time_us]
