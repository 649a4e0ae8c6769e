"""Web console benchmark: each page of the console loaded in a real browser (Debian's chromium driven by
Playwright) from a real `facefleet-server serve` holding 200 agents, 500 enrolled people with face crops,
unknown-face snapshots and 1M events over 30 days. Prints one JSON document:

- per page: its server time, from the first API request the page sent to the end of the last answer (the
  browser's Resource Timing; the page sends its calls together, and the server answers them on 2 cores), p95
  and median over the loads; also the `Server-Timing` of its API calls added up as if they had run one after
  the other, and the slowest single call; its weight (every file and API answer of a first load with an empty
  cache, face images counted apart, as they load lazily);
- the Activity page over 30 days, whose charts come from the daily and hourly rollups, against a baseline
  measured in the same run: two of its aggregates (events per day per device, expressions) counted straight
  from the raw events table.
Targets: every page's server time p95 < 300 ms; every page's weight < 500 KB.

Usage: .venv/bin/python benchmarks/console.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_server import NOW, ServerProcess, prepare, progress, raw_baseline
from unknown_faces import MODEL, people, real_faces

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.records import Crop
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import events_pb2, fleet_pb2, fleet_pb2_grpc

DEVICES = 200
PEOPLE = 500
CAMERAS = ("door", "hall")
PAGE_SERVER_P95_MS = 300
PAGE_WEIGHT_KB = 500
RAW_AGGREGATES = ("counts_daily_per_device_30d_raw_scan", "expressions_30d_raw_scan")
"""The baseline: two of the Activity page's aggregates, counted from the raw events table."""


# -- set-up ------------------------------------------------------------------------------------------


def enrol_people(state_dir: Path, real: list[Any], crop: bytes) -> None:
    """PEOPLE people straight into the state, each with an embedding and a real face crop."""
    rng = np.random.default_rng(3)
    state = SqliteState(state_dir / "server.db")
    now = utc_now()
    for i, vector in enumerate(people(real, PEOPLE, rng)):
        person = Person(
            f"person-{i:04d}",
            f"Person {i:04d}",
            groups=("staff",) if i % 3 else ("staff", "night"),
            embeddings=(Embedding(MODEL, vector, 0.8, "bench"),),
        )
        state.add_person(person, [Crop("jpeg", crop, "bench")], now)
    state.close()


def register_fleet(server: ServerProcess, snapshot: events_pb2.FaceSnapshot) -> None:
    """Every agent registers with its versions and reports its health; every tenth also reports five
    unknown faces with snapshots (for the Unknown faces page)."""

    async def agent(device: str, index: int) -> None:
        async with server.agent_channel(device) as channel:
            fleet = fleet_pb2_grpc.FleetServiceStub(channel)
            await fleet.Register(
                fleet_pb2.RegisterRequest(
                    device_id=device,
                    agent_version="0.1.0",
                    model_versions={"detector": "yunet@2023mar", "embedding": MODEL},
                    capabilities=["openvino:CPU", "expression", "access"],
                    hostname=f"nuc-{index:03d}",
                )
            )
            health = {"fps": 24.0, "outbox_pending": float(index % 7), "reports_pending": 0.0}
            for camera in CAMERAS:
                health |= {f"camera.{camera}.fps": 12.0, f"camera.{camera}.dropped": float(index)}
            events = []
            if index % 10 == 0:
                for k in range(5):
                    stamp = Timestamp()
                    stamp.FromDatetime(NOW - timedelta(minutes=k))
                    events.append(
                        events_pb2.Event(
                            event_id=str(uuid.uuid4()),
                            device_id=device,
                            time=stamp,
                            camera="door",
                            kind=events_pb2.EVENT_KIND_FACE,
                            decision=events_pb2.DECISION_UNKNOWN,
                            score=0.2,
                            model_versions={"embedding": MODEL},
                            snapshot=snapshot,
                        )
                    )
            await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id=device, events=events, health=health)
            )

    async def everyone() -> None:
        await asyncio.gather(*(agent(f"dev-{i:03d}", i) for i in range(DEVICES)))

    asyncio.run(everyone())


# -- pages -------------------------------------------------------------------------------------------


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def show(route: str) -> Callable[[Page, str], None]:
    """A step that opens a console page afresh (a navigation, as a reload or a bookmark does)."""

    def step(page: Page, base: str) -> None:
        page.goto("about:blank")
        page.goto(f"{base}/console/#/{route}", wait_until="load", timeout=60_000)
        page.evaluate("() => performance.setResourceTimingBufferSize(1000)")

    return step


MONTH = urlencode(
    {
        "from": (NOW + timedelta(hours=1) - timedelta(days=30)).isoformat(),
        "to": (NOW + timedelta(hours=1)).isoformat(),
    }
)
PAGES: dict[str, Callable[[Page, str], None]] = {
    "fleet": show("fleet"),
    "activity_24h": show("activity"),
    "activity_30d": show(f"activity?{MONTH}"),
    "people": show("people"),
    "unknown_faces": show("unknown"),
    "rollouts": show("rollouts"),
    "doors": show("doors"),
}


RESOURCES_JS = """() => [...performance.getEntriesByType('navigation'),
  ...performance.getEntriesByType('resource')].map((e) => ({
    url: e.name, status: e.responseStatus, bytes: e.encodedBodySize, start: e.requestStart || e.startTime,
    end: e.responseEnd,
    server_ms: (e.serverTiming.find((t) => t.name === 'app') || { duration: 0 }).duration }))"""
"""Every request of the page's document so far, from the browser's own Resource Timing (the body's bytes as
sent, and the Server-Timing the server reported)."""


def load(page: Page, base: str, step: Callable[[Page, str], None]) -> list[dict[str, Any]]:
    """Run a step that opens a page, let it settle, and return every request of that document: url,
    status, bytes of body, server milliseconds."""
    step(page, base)
    page.wait_for_load_state("networkidle", timeout=60_000)
    page.wait_for_timeout(300)
    rows = []
    for entry in page.evaluate(RESOURCES_JS):
        rows.append({**entry, "url": str(entry["url"]).removeprefix(base)})
    return rows


def is_image(url: str) -> bool:
    return url.startswith("/api/") and ("/crops/" in url or url.endswith(("/crop", "/image", "/context")))


def measure_pages(base: str, token: str, loads: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    executable = shutil.which("chromium")
    assert executable, "chromium is not installed: run scripts/setup"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        for name, step in PAGES.items():
            progress(f"page {name}")
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            sign_in(page, base, token)
            first = load(page, base, step)
            failed = [r for r in first if r["status"] >= 400]
            assert not failed, f"{name}: {failed}"
            span_ms, page_ms, slowest_ms = [], [], []
            per_call: dict[str, list[float]] = {}
            for _ in range(loads):
                rows = [r for r in load(page, base, step) if r["url"].startswith("/api/")]
                api = [r for r in rows if not is_image(r["url"])]
                page_ms.append(sum(r["server_ms"] for r in api))
                span_ms.append(max(r["end"] for r in api) - min(r["start"] for r in api) if api else 0.0)
                slowest_ms.append(max((r["server_ms"] for r in api), default=0.0))
                for r in api:
                    per_call.setdefault(r["url"].split("?")[0], []).append(r["server_ms"])
            span_ms.sort()
            page_ms.sort()
            slowest_ms.sort()
            images = [r for r in first if is_image(r["url"])]
            results[name] = {
                "api_calls": sorted({r["url"].split("?")[0] for r in first if r["url"].startswith("/api/")}),
                "server_ms_p95": round(span_ms[int(0.95 * (len(span_ms) - 1))], 1),
                "server_ms_median": round(statistics.median(span_ms), 1),
                "server_ms_summed_p95": round(page_ms[int(0.95 * (len(page_ms) - 1))], 1),
                "slowest_call_ms_p95": round(slowest_ms[int(0.95 * (len(slowest_ms) - 1))], 1),
                "call_ms_median": {
                    path: round(statistics.median(ms), 1)
                    for path, ms in sorted(per_call.items(), key=lambda item: -statistics.median(item[1]))[:5]
                },
                "weight_kb": round(sum(r["bytes"] for r in first if not is_image(r["url"])) / 1024, 1),
                "face_images": len(images),
                "face_images_kb": round(sum(r["bytes"] for r in images) / 1024, 1),
                "files": len([r for r in first if not r["url"].startswith("/api/")]),
                "files_kb": round(
                    sum(r["bytes"] for r in first if not r["url"].startswith("/api/")) / 1024, 1
                ),
                "largest_api_answers_kb": dict(
                    sorted(
                        (
                            (r["url"].split("?")[0], round(r["bytes"] / 1024, 1))
                            for r in first
                            if r["url"].startswith("/api/") and not is_image(r["url"])
                        ),
                        key=lambda item: -item[1],
                    )[:3]
                ),
            }
            context.close()
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k events and 5 loads per page")
    parser.add_argument("--events", type=int, default=None, help="stored events (default 1M)")
    args = parser.parse_args()
    stored = args.events or (100_000 if args.quick else 1_000_000)
    loads = 5 if args.quick else 20
    random.seed(5)
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as tmp:
        root = Path(tmp)
        progress("embedding t1.jpg's faces")
        real, crop, context = real_faces(root)
        setup = prepare(root, devices=DEVICES, stored_events=stored)
        progress(f"enrolling {PEOPLE} people")
        enrol_people(setup["state_dir"], real, crop)
        embedding = serde.embedding_to_proto(Embedding(MODEL, real[0], 0.8))
        snapshot = events_pb2.FaceSnapshot(crop_jpeg=crop, context_jpeg=context, embedding=embedding)
        token = dict(setup["admin_md"])["authorization"].removeprefix("Bearer ")
        with ServerProcess(root, setup["state_dir"]) as server:
            progress(f"registering {DEVICES} agents")
            register_fleet(server, snapshot)
            start = time.perf_counter()
            pages = measure_pages(f"https://localhost:{server.http}", token, loads)
            pages_s = time.perf_counter() - start
        raw = raw_baseline(setup["state_dir"] / "server.db", 3 if args.quick else 5)
    rollup_30d = pages["activity_30d"]["server_ms_median"]
    raw = {name: raw[name] for name in RAW_AGGREGATES}
    raw_30d = sum(q["median_ms"] for q in raw.values())
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "chromium": shutil.which("chromium"),
        },
        "stored_events": stored,
        "agents": DEVICES,
        "people": PEOPLE,
        "loads_per_page": loads,
        "measured_s": round(pages_s, 1),
        "pages": pages,
        "activity_30d_raw_scan_baseline": raw,
        "activity_30d_vs_raw_scan": round(raw_30d / rollup_30d, 1) if raw_30d and rollup_30d else None,
        "targets": {
            "every_page_server_p95_under_300ms": all(
                p["server_ms_p95"] < PAGE_SERVER_P95_MS for p in pages.values()
            ),
            "every_page_under_500kb": all(p["weight_kb"] < PAGE_WEIGHT_KB for p in pages.values()),
        },
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
