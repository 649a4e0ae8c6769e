"""The attribute rollups' rows: one per bucket, device, kind, decision and door, with a count column per
cell of estimated gender × age band (2 × 7 columns), on both backends.

One wide row in place of a row per cell: an aggregate over a month of 200 devices reads 14 times fewer rows,
and on PostgreSQL, where reading and grouping a row costs more than all 14 sums of a wide one, the attribute
distribution over 10M events took 167 ms in long rows and 41 ms in wide ones (median). The cells are the
wire's own vocabulary (GENDERS, AGE_BANDS), which agents' reports are checked against.

The rollups were long before (SQLite migration 9, PostgreSQL migration 1: `event_attributes_day/hour`, a
row per gender and age band); `convert_long_rollup` turns such a table's rows into the wide ones."""

from __future__ import annotations

from facefleet.link.events import AGE_BANDS, GENDERS

KEY_COLUMNS = ("bucket_us", "device_id", "kind", "decision", "door")
"""The key of a wide row (its primary key)."""
CELLS = tuple((gender, band) for gender in GENDERS for band in AGE_BANDS)
"""(gender, age band) of each count column, in column order."""


def cell_column(gender: str, band: str) -> str:
    """The count column of a cell: 'n_female_0_12', 'n_male_60_plus'."""
    return f"n_{gender}_{band.replace('-', '_').replace('+', '_plus')}"


CELL_COLUMNS = tuple(cell_column(gender, band) for gender, band in CELLS)
LONG_TABLES = ("event_attributes_day", "event_attributes_hour")
"""The long rollups that the wide ones replace (day, hour)."""


def table_body(integer: str) -> str:
    """The column and key definitions of a wide rollup, with `integer` as the integer type."""
    cells = ", ".join(f"{column} {integer} NOT NULL DEFAULT 0" for column in CELL_COLUMNS)
    return (
        f"bucket_us {integer} NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL, decision TEXT NOT NULL, "
        f"door TEXT NOT NULL, {cells}, PRIMARY KEY ({', '.join(KEY_COLUMNS)})"
    )


def convert_long_rollup(long_table: str, wide_table: str, *, add: bool = False) -> str:
    """An INSERT that turns the rows of a long rollup (bucket_us, device_id, kind, decision, door, gender,
    age_band, n) into rows of a wide one; add: to the counts of rows already there."""
    sums = ", ".join(
        f"SUM(CASE WHEN gender = '{gender}' AND age_band = '{band}' THEN n ELSE 0 END)"
        for gender, band in CELLS
    )
    keys = ", ".join(KEY_COLUMNS)
    updates = ", ".join(f"{c} = {wide_table}.{c} + excluded.{c}" for c in CELL_COLUMNS)
    return (
        f"INSERT INTO {wide_table} ({keys}, {', '.join(CELL_COLUMNS)}) "  # noqa: S608 (the schema's names)
        f"SELECT {keys}, {sums} FROM {long_table} GROUP BY {keys}"
        + (f" ON CONFLICT ({keys}) DO UPDATE SET {updates}" if add else "")
    )
