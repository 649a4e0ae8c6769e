"""Unknown-face benchmark. Prints one JSON document; every figure is measured in this run, next to a baseline
from the same run:

- ingest: 50 concurrent agents reporting face events (500 per ReportResults) that each carry a ~5 KB snapshot
  (a real aligned face crop as JPEG, a 160 px context view, a 128-d embedding), vs the same events without
  snapshots; target >= 2,000 events/s with snapshots;
- clustering: 10,000 unknown snapshots of 300 unseen people (synthetic embeddings spread as real ones are:
  strangers ~0.15 apart, sightings of one person ~0.5) grouped by `cluster_unknown`, and the
  whole `UnknownFaces.clusters()` path (read from SQLite + cluster); target < 1 s; with how pure the
  clusters are. Baseline: one similarity product of all 10,000 snapshots against each other;
- strangers: 20,000 and 50,000 unknown snapshots of as many people (random embeddings, no two alike: the
  clustering's worst case, one cluster each) grouped by `cluster_unknown`, vs the same snapshots grouped one
  at a time against every cluster (the clustering before it compared blocks of snapshots in one product),
  with whether both group alike; then `UnknownFaces.clusters()` on its thread: the first listing (read from
  SQLite and cluster), the next (nothing changed: kept), and 6 listings at once after a new snapshot, with
  how many clusterings they took.

The ingest runs against a real `facefleet-server serve` process (mutual TLS, SQLite in a temporary state
directory, loopback only), the clustering in this process on a real SQLite state.
Usage: .venv/bin/python benchmarks/unknown_faces.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_server import NOW, ServerProcess, ingest, new_state, progress

from facefleet.link import serde
from facefleet.link.checks import utc_now
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.server.domain.snapshots import cluster_unknown
from facefleet.server.gallery.unknown import UnknownFaces, UnknownSettings
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import events_pb2, fleet_pb2
from facefleet.vision.alignment import align_face
from facefleet.vision.config import RuntimeConfig
from facefleet.vision.images import read_image
from facefleet.vision.models.importer import import_defaults
from facefleet.vision.models.store import ModelStore
from facefleet.vision.photos import sample_photo
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime

MODEL = "sface@2021dec"
THRESHOLD = 0.363


def real_faces(root: Path) -> tuple[list[npt.NDArray[np.float32]], bytes, bytes]:
    """Embeddings of t1.jpg's six faces and their mirror images, one aligned crop as JPEG and a 160 px
    context view as JPEG."""
    runtime = Runtime(RuntimeConfig().settings(root))
    store = ModelStore(root / "models")
    import_defaults(runtime, store)
    analyzer = FaceAnalyzer(runtime, store)
    photo = read_image(sample_photo("t1"))
    vectors = []
    crop = b""
    for frame in (photo, np.ascontiguousarray(photo[:, ::-1])):
        for face in analyzer.analyze(frame):
            assert face.embedding is not None
            vectors.append(face.embedding)
            if not crop:
                aligned = align_face(frame, face.detection.landmarks_xy)
                ok, data = cv2.imencode(".jpg", aligned, [cv2.IMWRITE_JPEG_QUALITY, 85])
                assert ok
                crop = bytes(data.tobytes())
    scale = 160 / max(photo.shape[:2])
    ok, context = cv2.imencode(
        ".jpg", cv2.resize(photo, None, fx=scale, fy=scale), [cv2.IMWRITE_JPEG_QUALITY, 50]
    )
    assert ok
    return vectors, crop, bytes(context.tobytes())


def people(
    real: list[npt.NDArray[np.float32]], count: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """`count` unseen people, (count, 128): the mean direction of real face embeddings plus a random one of
    each person, so that two people score ~0.15 against each other, as strangers do."""
    mean = np.mean(np.stack(real), axis=0)
    mean /= np.linalg.norm(mean)
    own = rng.normal(size=(count, 128)).astype(np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    identities = 0.42 * mean + own
    return identities / np.linalg.norm(identities, axis=1, keepdims=True)


def sightings(identities: npt.NDArray[np.float32], count: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """(which person, (count, 128) embeddings): each a person's embedding with the spread of real sightings
    (cosine ~0.7 to the person's own, ~0.5 between two sightings of the same person)."""
    who = rng.integers(0, len(identities), size=count)
    noise = rng.normal(size=(count, 128)).astype(np.float32)
    noisy = identities[who] + 1.02 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return who, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def snapshot_report(device: str, first: int, count: int, snapshot: events_pb2.FaceSnapshot | None) -> bytes:
    events = []
    for i in range(first, first + count):
        stamp = Timestamp()
        stamp.FromDatetime(NOW + timedelta(milliseconds=i))
        event = events_pb2.Event(
            event_id=str(uuid.uuid4()),
            device_id=device,
            time=stamp,
            camera="cam1",
            kind=events_pb2.EVENT_KIND_FACE,
            decision=events_pb2.DECISION_UNKNOWN,
            score=0.2,
            model_versions={"embedding": MODEL},
        )
        if snapshot is not None:
            event.snapshot.CopyFrom(snapshot)
        events.append(event)
    return fleet_pb2.ReportResultsRequest(device_id=device, events=events).SerializeToString()


def clustering(root: Path, real: list[npt.NDArray[np.float32]], crop: bytes, count: int, repeats: int) -> Any:
    rng = np.random.default_rng(11)
    identities = people(real, 300, rng)
    who, vectors = sightings(identities, count, rng)
    state = SqliteState(root / "cluster.db")
    start = utc_now() - timedelta(days=1)
    events = [
        Event(str(uuid.UUID(int=i + 1)), "dev-000", start + timedelta(seconds=i), "face", "unknown",
              camera="cam1", snapshot=FaceSnapshot(crop, b"", Embedding(MODEL, vectors[i], 0.8)))
        for i in range(count)
    ]  # fmt: skip
    for offset in range(0, count, 5000):
        state.add_events(events[offset : offset + 5000])
    loaded = state.snapshots.unknown_snapshots(start - timedelta(days=1), count)
    timings, clusters = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        clusters = cluster_unknown(loaded, THRESHOLD)
        timings.append(time.perf_counter() - began)
    whole = []
    for _ in range(repeats):  # a new handler each time: nothing kept from the last listing
        handler = UnknownFaces(state, None, lambda: None, UnknownSettings(threshold=THRESHOLD))  # type: ignore[arg-type]
        began = time.perf_counter()
        asyncio.run(handler.clusters())
        whole.append(time.perf_counter() - began)
    baseline = []
    matrix = np.stack([s.vector for s in loaded])
    for _ in range(repeats):
        began = time.perf_counter()
        _ = matrix @ matrix.T
        baseline.append(time.perf_counter() - began)
    state.close()
    index = {f"{uuid.UUID(int=i + 1)}": int(who[i]) for i in range(count)}
    majority = sum(Counter(index[s.event_id] for s in c.snapshots).most_common(1)[0][1] for c in clusters)
    return {
        "snapshots": count,
        "people": len(set(who.tolist())),
        "clusters": len(clusters),
        "purity": round(majority / count, 4),
        "cluster_unknown_s_median": round(float(np.median(timings)), 3),
        "clusters_from_state_s_median": round(float(np.median(whole)), 3),
        "all_pairs_similarity_baseline_s_median": round(float(np.median(baseline)), 3),
    }


def one_at_a_time(snapshots: list[Any], threshold: float) -> list[frozenset[str]]:
    """The snapshots' clusters (sets of event ids) as each compared with every cluster's mean in turn: one
    (clusters × D) product per snapshot."""
    ordered = sorted(snapshots, key=lambda s: (s.time, s.event_id))
    dim = ordered[0].vector.shape[0]
    sums = np.zeros((len(ordered), dim), dtype=np.float32)
    means = np.zeros((len(ordered), dim), dtype=np.float32)
    groups: list[list[str]] = []
    for snapshot in ordered:
        k = len(groups)
        best = -1
        if k:
            similarity = means[:k] @ snapshot.vector
            best = int(np.argmax(similarity))
            if float(similarity[best]) < threshold:
                best = -1
        if best < 0:
            best = k
            groups.append([])
        groups[best].append(snapshot.event_id)
        sums[best] += snapshot.vector
        means[best] = sums[best] / max(float(np.linalg.norm(sums[best])), 1e-12)
    return [frozenset(g) for g in groups]


class Clusterings(logging.Handler):
    """Counts the clusterings UnknownFaces logs."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("clustered")


def strangers(root: Path, crop: bytes, count: int) -> Any:
    rng = np.random.default_rng(13)
    vectors = rng.normal(size=(count + 1, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    state = SqliteState(root / f"strangers-{count}.db")
    start = utc_now() - timedelta(days=1)
    events = [
        Event(str(uuid.UUID(int=i + 1)), "dev-000", start + timedelta(seconds=i), "face", "unknown",
              camera="cam1", snapshot=FaceSnapshot(crop, b"", Embedding(MODEL, vectors[i], 0.8)))
        for i in range(count + 1)
    ]  # fmt: skip
    for offset in range(0, count, 5000):
        state.add_events(events[offset : min(count, offset + 5000)])
    loaded = state.snapshots.unknown_snapshots(start - timedelta(days=1), count)
    began = time.perf_counter()
    clusters = cluster_unknown(loaded, THRESHOLD)
    blocked = time.perf_counter() - began
    began = time.perf_counter()
    baseline = one_at_a_time(loaded, THRESHOLD)
    each = time.perf_counter() - began
    same = sorted(map(sorted, baseline)) == sorted(sorted(s.event_id for s in c.snapshots) for c in clusters)
    counter = Clusterings()
    logging.getLogger("facefleet.server.gallery.unknown").addHandler(counter)
    logging.getLogger("facefleet.server.gallery.unknown").setLevel(logging.INFO)
    handler = UnknownFaces(state, None, lambda: None, UnknownSettings(threshold=THRESHOLD))  # type: ignore[arg-type]

    async def listings(n: int) -> float:
        began = time.perf_counter()
        await asyncio.gather(*(handler.clusters() for _ in range(n)))
        return time.perf_counter() - began

    first = asyncio.run(listings(1))
    again = asyncio.run(listings(1))
    state.add_events(events[count:])
    before = counter.count
    concurrent = asyncio.run(listings(6))
    logging.getLogger("facefleet.server.gallery.unknown").removeHandler(counter)
    state.close()
    return {
        "snapshots": count,
        "clusters": len(clusters),
        "cluster_unknown_s": round(blocked, 3),
        "one_at_a_time_baseline_s": round(each, 3),
        "speed_up": round(each / blocked, 2),
        "same_clusters": same,
        "first_listing_s": round(first, 3),
        "next_listing_kept_s": round(again, 4),
        "six_listings_after_a_new_snapshot_s": round(concurrent, 3),
        "clusterings_for_the_six": counter.count - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as tmp:
        root = Path(tmp)
        progress("embedding t1.jpg's faces")
        real, crop, context = real_faces(root)
        embedding = serde.embedding_to_proto(Embedding(MODEL, real[0], 0.8))
        snapshot = events_pb2.FaceSnapshot(crop_jpeg=crop, context_jpeg=context, embedding=embedding)
        progress("clustering 10,000 unknown snapshots")
        figures: dict[str, Any] = {"clustering": clustering(root, real, crop, 10_000, 3 if args.quick else 7)}
        figures["strangers"] = []
        for count in (20_000,) if args.quick else (20_000, 50_000):
            progress(f"clustering {count:,} unknown snapshots of as many people")
            figures["strangers"].append(strangers(root, crop, count))
        state_dir, state, _ = new_state(root, [f"dev-{i:03d}" for i in range(50)])
        state.close()
        calls = 2 if args.quick else 4
        with ServerProcess(root, state_dir) as server:
            progress("ingest from 50 agents, with and without snapshots")
            with_snapshot = partial(snapshot_report, snapshot=snapshot)
            without = partial(snapshot_report, snapshot=None)
            figures["ingest_with_snapshots"] = asyncio.run(ingest(server, 50, calls, 500, with_snapshot))
            figures["ingest_without_snapshots_baseline"] = asyncio.run(
                ingest(server, 50, calls, 500, without)
            )
    with_s = figures["ingest_with_snapshots"]["events_per_s"]
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **figures,
        "ingest_ratio_with_vs_without": round(
            with_s / figures["ingest_without_snapshots_baseline"]["events_per_s"], 2
        ),
        "targets": {
            "ingest_with_snapshots_min_2000_per_s": with_s >= 2000,
            "clustering_10k_under_1s": figures["clustering"]["clusters_from_state_s_median"] < 1.0,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
