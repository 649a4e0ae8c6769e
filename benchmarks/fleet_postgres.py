"""PostgreSQL helpers of the server benchmark (fleet_server.py): a fast fill of millions of stored events with
COPY, in the shape the server writes them (facefleet.server.state.sql.events and
facefleet.server.state.postgres.schema): the rows of `events` in its monthly partitions, made with
create_partition, and the day and hour rollups and attribute rollups counted from the same rows.

Rows come from a few hundred templates (the server's own row encoding of one event of each kind, decision,
expression, gender and age band), so 10M rows cost one string join each; times are sorted and event ids
ascend with them, so the index inserts of the COPY append instead of splitting pages at random."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psycopg

from facefleet.link.events import AGE_BANDS, GENDERS, AttributesResult, Event, ExpressionResult
from facefleet.server.domain.queries import to_us
from facefleet.server.state.postgres import schema
from facefleet.server.state.sql import attribute_cells
from facefleet.server.state.sql.events import ATTRIBUTE_ROLLUPS, COLUMNS, ROLLUPS, _label, _row

CHUNK = 200_000
"""Rows per write into a COPY."""
ID_PREFIX = "00000000-0000-4000-8000-"
"""Event ids of the filled rows: this prefix and the row's number in 12 hex digits (sorted like the times)."""
Ints = npt.NDArray[np.int64]


def templates(labels: Sequence[str]) -> list[Event]:
    """One event per row shape: access granted and denied, then face events by decision, expression and
    attributes (none, or each gender × age band), in the order `template_indexes` numbers them."""
    when, event_id = datetime(2026, 1, 1, tzinfo=timezone.utc), f"{ID_PREFIX}{0:012x}"
    found = [
        Event(event_id, "dev-000", when, "access", d, person_id="p1", door="main")
        for d in ("granted", "denied")
    ]
    estimates = [
        AttributesResult(gender, 0.8 if gender == "male" else 0.2, float(band[:2].rstrip("-+")) + 4, band)
        for gender in GENDERS
        for band in AGE_BANDS
    ]
    for decision in ("unknown", "match"):
        for label in labels:
            for attributes in (None, *estimates):
                found.append(
                    Event(
                        event_id,
                        "dev-000",
                        when,
                        "face",
                        decision,
                        camera="cam1",
                        person_id="" if decision == "unknown" else "p1",
                        score=0.6,
                        expression=ExpressionResult(label),
                        attributes=attributes,
                    )
                )
    return found


def template_indexes(
    rng: np.random.Generator,
    device: Ints,
    *,
    devices: int,
    labels: int,
    attributes_share: float,
    band_weights: Sequence[float],
) -> Ints:
    """The template of each row, drawn as fleet_server.fill_events draws events: 20 % access (80 % granted),
    else face (30 % unknown), a uniform expression, and attributes on the first `attributes_share` of the
    devices (either gender, age bands by `band_weights`)."""
    count = len(device)
    access = rng.random(count) < 0.2
    granted = rng.random(count) < 0.8
    match = rng.random(count) >= 0.3
    label = rng.integers(0, labels, count)
    weights = np.asarray(band_weights, dtype=np.float64)
    band = rng.choice(len(AGE_BANDS), count, p=weights / weights.sum())
    gender = rng.integers(0, len(GENDERS), count)
    estimated = device < devices * attributes_share
    attributes = np.where(estimated, 1 + gender * len(AGE_BANDS) + band, 0)
    per_label = 1 + len(GENDERS) * len(AGE_BANDS)
    face = 2 + (match * labels + label) * per_label + attributes
    return np.where(access, np.where(granted, 0, 1), face).astype(np.int64)


def copy_text(values: Sequence[object]) -> str:
    """COPY's text format of plain values (none holds a tab, newline or backslash)."""
    return "\t".join("\\N" if v is None else str(v) for v in values)


def months(lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    """Every (year, month) from the one of lo_us to the one of hi_us."""
    year, month = schema.month_of(lo_us)
    found = []
    while (year, month) <= schema.month_of(hi_us):
        found.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def copy_events(
    conn: psycopg.Connection[tuple[object, ...]],
    count: int,
    *,
    end: datetime,
    span: timedelta,
    devices: int,
    labels: Sequence[str],
    band_weights: Sequence[float],
    attributes_share: float = 1.0,
    seed: int = 7,
) -> dict[str, float]:
    """`count` events of devices dev-000… over [end - span, end) with their rollups, by COPY (conn in
    autocommit mode), then VACUUM (ANALYZE), as autovacuum leaves tables of that age (the visibility map
    set: no autovacuum of the fill is still running when the queries and retention are measured); seconds
    per step."""
    rng = np.random.default_rng(seed)
    steps: dict[str, float] = {}
    started = time.perf_counter()
    end_us = to_us(end)
    times = np.sort(end_us - rng.integers(1, int(span.total_seconds() * 1e6) + 1, count, dtype=np.int64))
    device = rng.integers(0, devices, count, dtype=np.int64)
    shapes = templates(labels)
    kind = template_indexes(
        rng,
        device,
        devices=devices,
        labels=len(labels),
        attributes_share=attributes_share,
        band_weights=band_weights,
    )
    names = [f"dev-{i:03d}" for i in range(devices)]
    steps["generate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    for year, month in months(int(times[0]), int(times[-1])):
        schema.create_partition(conn, year, month)
    texts = [copy_text(_row(e)[3:]) for e in shapes]
    rows = zip(range(count), device.tolist(), times.tolist(), kind.tolist(), strict=True)
    copy_lines(
        conn,
        f"COPY events ({COLUMNS}) FROM STDIN",
        (f"{ID_PREFIX}{i:012x}\t{names[d]}\t{t}\t{texts[k]}\n" for i, d, t, k in rows),
    )
    steps["copy_events_s"] = time.perf_counter() - started

    started = time.perf_counter()
    copy_rollups(conn, times, device, kind, shapes, names)
    steps["copy_rollups_s"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE)")
    steps["vacuum_analyze_s"] = time.perf_counter() - started
    return {name: round(seconds, 2) for name, seconds in steps.items()}


def copy_rollups(
    conn: psycopg.Connection[tuple[object, ...]],
    times: Ints,
    device: Ints,
    kind: Ints,
    shapes: Sequence[Event],
    names: Sequence[str],
) -> None:
    """The rollup rows of the filled events, as add_events counts them: per bucket, device and the rollup's
    own key columns (events without attributes are not in the attribute rollups, which count the cells of
    a key in columns). Copied into a staging table, then added to the rollup's rows (ingest may have
    counted events in the same buckets)."""
    main_keys = [(e.kind, e.decision, _label(e), e.door) for e in shapes]
    attribute_keys = [
        (e.kind, e.decision, e.door, e.attributes.gender, e.attributes.age_band) if e.attributes else None
        for e in shapes
    ]
    for tables, keys, columns in (
        (ROLLUPS, main_keys, "kind, decision, expression, door"),
        (ATTRIBUTE_ROLLUPS, attribute_keys, "kind, decision, door, gender, age_band"),
    ):
        distinct = sorted({k for k in keys if k is not None})
        number = {k: i for i, k in enumerate(distinct)}
        lookup = np.array([number[k] if k is not None else -1 for k in keys], dtype=np.int64)[kind]
        kept = lookup >= 0
        texts = [copy_text(k) for k in distinct]
        for size, table in tables:
            key = ((times[kept] // size) * len(names) + device[kept]) * len(distinct) + lookup[kept]
            unique, counts = np.unique(key, return_counts=True)
            rest, classes = np.divmod(unique, len(distinct))
            buckets, devices = np.divmod(rest, len(names))
            rows = zip(
                (buckets * size).tolist(), devices.tolist(), classes.tolist(), counts.tolist(), strict=True
            )
            conn.execute(
                f"CREATE TEMPORARY TABLE staging (bucket_us BIGINT, device_id TEXT, "
                f"{', '.join(f'{c} TEXT' for c in columns.split(', '))}, n BIGINT)"
            )
            copy_lines(
                conn,
                f"COPY staging (bucket_us, device_id, {columns}, n) FROM STDIN",
                (f"{b}\t{names[d]}\t{texts[c]}\t{n}\n" for b, d, c, n in rows),
            )
            if tables is ATTRIBUTE_ROLLUPS:  # wide rows, a count column per gender and age band
                conn.execute(attribute_cells.convert_long_rollup("staging", table, add=True))
            else:
                conn.execute(
                    f"INSERT INTO {table} (bucket_us, device_id, {columns}, n) "
                    f"SELECT bucket_us, device_id, {columns}, n FROM staging "
                    f"ON CONFLICT (bucket_us, device_id, {columns}) DO UPDATE SET n = {table}.n + excluded.n"
                )
            conn.execute("DROP TABLE staging")


def copy_lines(conn: psycopg.Connection[tuple[object, ...]], statement: str, lines: Iterator[str]) -> None:
    """One COPY … FROM STDIN of these lines (COPY's text format), written CHUNK lines at a time."""
    with conn.cursor().copy(statement) as copy:
        while block := "".join(itertools.islice(lines, CHUNK)):
            copy.write(block)


def data_volume(path: Path) -> dict[str, object]:
    """The mounted volume holding `path` (from /proc/mounts): its mount point, file system and options.

    online_discard: mounted with `discard`, which trims freed blocks as files go; a dropped partition's
    gigabytes then take seconds to free where periodic `fstrim` takes milliseconds."""
    resolved, best = path.resolve(), ("", "", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fs_type, options, *_ = line.split()
        mount_point = mount_point.replace("\\040", " ")
        if resolved.is_relative_to(mount_point) and len(mount_point) >= len(best[0]):
            best = (mount_point, fs_type, options)
    mount_point, fs_type, options = best
    return {
        "mount_point": mount_point,
        "fs_type": fs_type,
        "options": options,
        "online_discard": "discard" in options.split(","),
    }
