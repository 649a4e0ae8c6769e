"""1:N search speed: plain float32 brute force (`G @ q` + argpartition) against the compact `Gallery`, and the
time to load a 100k gallery from SQLite. Prints one JSON document.

Galleries hold N random unit 128-d embeddings of N/5 persons, 5 samples each scattered around the person's
own random centre (sample-to-centre cosine ≈ 0.86). Queries are noisy copies of random gallery rows (cosine
≈ 0.8 to their source row: a real top-1); 'hard' queries have cosine ≈ 0.55. Latency is per single query,
each method timed in its own loop after a warm-up.

    python benchmarks/gallery.py            # 1k, 10k, 100k, 1M (about 40 s on 2 cores)
    python benchmarks/gallery.py --quick    # without 1M
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from facefleet.agent.domain.records import Embedding, Person, PersonUpsert
from facefleet.agent.recognition.gallery import Gallery, PersonScore
from facefleet.agent.recognition.matching import DecisionPolicy, Matcher
from facefleet.agent.store.database import EmbeddingStore

DIM = 128
SAMPLES = 5
MODEL = "sface@2021dec"
FloatArray = npt.NDArray[np.float32]


def normalised(rows: FloatArray) -> FloatArray:
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows


def make_gallery(rng: np.random.Generator, n: int) -> tuple[list[str], npt.NDArray[np.int32], FloatArray]:
    """(N,) person ids, (N,) person index, (N, DIM) unit rows; built in chunks to bound memory at 1M."""
    persons = n // SAMPLES
    person_index = np.repeat(np.arange(persons, dtype=np.int32), SAMPLES)
    rows = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # chunks hold whole persons: 100_000 is a multiple of SAMPLES
        stop = min(start + 100_000, n)
        centres = normalised(rng.standard_normal(((stop - start) // SAMPLES, DIM), np.float32))
        noise = rng.standard_normal((stop - start, DIM), np.float32) * np.float32(0.6 / math.sqrt(DIM))
        rows[start:stop] = normalised(np.repeat(centres, SAMPLES, axis=0) + noise)
    return [f"person-{p:07d}" for p in person_index], person_index, rows


def make_queries(rng: np.random.Generator, rows: FloatArray, count: int, noise: float) -> FloatArray:
    source = rows[rng.integers(len(rows), size=count)]
    jitter = rng.standard_normal(source.shape, np.float32) * np.float32(noise / math.sqrt(DIM))
    return normalised(source + jitter)


def timed(search: Callable[[FloatArray], Any], queries: FloatArray) -> tuple[list[Any], dict[str, float]]:
    for query in queries[:5]:
        search(query)
    results, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - start)
    ms = np.asarray(seconds) * 1e3
    return results, {
        "median_ms": round(float(np.median(ms)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
    }


def bench_size(rng: np.random.Generator, n: int, count: int) -> dict[str, Any]:
    ids, person_index, rows = make_gallery(rng, n)
    started = time.perf_counter()
    gallery = Gallery.build(MODEL, ids, rows)
    build_s = time.perf_counter() - started
    policy = DecisionPolicy()

    def baseline(query: FloatArray) -> int:
        """The timed float32 baseline: the row with the best score, via argpartition."""
        scores = rows @ query
        top = np.argpartition(-scores, 10)[:10]
        return int(top[np.argmax(scores[top])])

    def exact_persons(query: FloatArray) -> list[PersonScore]:
        """Untimed: the best two persons by exact float32 score (for decisions and score errors)."""
        scores = rows @ query
        best: dict[str, float] = {}
        top = np.argpartition(-scores, 4 * SAMPLES)[: 4 * SAMPLES]
        for row in top[np.argsort(-scores[top])]:
            best.setdefault(ids[row], float(scores[row]))
        return [PersonScore(p, s) for p, s in list(best.items())[:2]]

    def compact(query: FloatArray) -> list[PersonScore]:
        return gallery.search(query, k=2)  # k=2 as Matcher.identify asks, for the margin

    report: dict[str, Any] = {"embeddings": n, "persons": n // SAMPLES, "compact_build_s": round(build_s, 3)}
    for label, noise in (("", 0.75), ("hard_", 1.5)):
        queries = make_queries(rng, rows, count, noise)
        best_rows, float32_times = timed(baseline, queries)
        found, compact_times = timed(compact, queries)
        expected = [exact_persons(q) for q in queries]
        assert all(ids[r] == e[0].person_id for r, e in zip(best_rows, expected, strict=True))
        agree = sum(e[0].person_id == f[0].person_id for e, f in zip(expected, found, strict=True))
        decisions_agree = sum(
            (policy.decide(MODEL, e).status, policy.decide(MODEL, e).person_id)
            == (policy.decide(MODEL, f).status, policy.decide(MODEL, f).person_id)
            for e, f in zip(expected, found, strict=True)
        )
        if not label:
            id_bytes = sum(sys.getsizeof(p) + 8 for p in gallery.person_ids)
            report["float32"] = {
                **float32_times,
                "bytes_per_embedding": (rows.nbytes + person_index.nbytes) / n,
            }
            report["compact"] = {
                **compact_times,
                "bytes_per_embedding": round(gallery.nbytes / n, 1),
                "bytes_per_embedding_with_person_ids": round((gallery.nbytes + id_bytes) / n, 1),
                "rescored_candidates": max(gallery.candidates, n // 512),
            }
            report["speedup_median"] = round(float32_times["median_ms"] / compact_times["median_ms"], 2)
        report[f"{label}queries"] = {
            "mean_top1_score": round(float(np.mean([e[0].score for e in expected])), 3),
            "top1_person_agree": f"{agree}/{count}",
            "all_agree": agree == count,
            "decisions_agree": f"{decisions_agree}/{count}",
            "max_abs_top1_score_error": round(
                max(
                    abs(e[0].score - f[0].score)
                    for e, f in zip(expected, found, strict=True)
                    if e[0].person_id == f[0].person_id
                ),
                5,
            ),
        }
    return report


def bench_sqlite_load(rng: np.random.Generator, n: int = 100_000) -> dict[str, Any]:
    _, _, rows = make_gallery(rng, n)
    upserts = [
        PersonUpsert(
            Person(f"person-{p:07d}"),
            tuple(Embedding(MODEL, r) for r in rows[p * SAMPLES : (p + 1) * SAMPLES]),
        )
        for p in range(n // SAMPLES)
    ]
    with tempfile.TemporaryDirectory() as directory, EmbeddingStore(Path(directory) / "agent.db") as store:
        started = time.perf_counter()
        store.gallery.apply_batch(upserts)
        insert_s = time.perf_counter() - started
        loads = []
        for _ in range(3):
            started = time.perf_counter()
            loaded = store.gallery.load_embeddings(MODEL)
            loads.append(time.perf_counter() - started)
        matcher = Matcher()
        started = time.perf_counter()
        matcher.refresh(store.gallery, [MODEL])
        refresh_s = time.perf_counter() - started
        size_mb = (Path(directory) / "agent.db").stat().st_size / 1e6
    assert loaded.matrix.shape == (n, DIM)
    return {
        "embeddings": n,
        "load_embeddings_s": round(min(loads), 3),
        "load_embeddings_median_s": round(float(np.median(loads)), 3),
        "matcher_refresh_s (load + build)": round(refresh_s, 3),
        "insert_one_batch_s": round(insert_s, 3),
        "file_mb": round(size_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the 1M gallery")
    parser.add_argument("--queries", type=int, default=200, help="queries per gallery size (default 200)")
    args = parser.parse_args()
    sizes = [1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000])
    rng = np.random.default_rng(2024)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "setup": {
            "dim": DIM,
            "samples_per_person": SAMPLES,
            "queries": args.queries,
            "float32": "G @ q, argpartition top 10, person of the best row",
            "compact": "Gallery.search(q, k=2): 256-bit SimHash Hamming pass, int8 re-score of candidates",
        },
        "galleries": [bench_size(rng, n, args.queries) for n in sizes],
        "sqlite": bench_sqlite_load(rng),
    }
    results["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
