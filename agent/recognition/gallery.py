"""The in-memory gallery of one embedding model and its fast 1:N search: pure numpy.

A `Gallery` holds one embedding model's enrolled vectors in a compact form, 172 bytes per 128-d embedding:
int8 codes with a per-row scale (dequantised cosine within ~2e-3 of float32) and a 256-bit SimHash (signs of
projections on fixed random hyperplanes). A query first ranks every row by Hamming distance, XOR + popcount
over 32 bytes per row, then re-scores the `candidates` closest rows from their int8 codes. That reads 16×
fewer bytes than a float32 `G @ q` and needs no BLAS. Galleries of ≤ `candidates` rows are scored in full.

Scores are cosine similarities. A person's score is their best sample ('best') or the cosine to the
normalised, quality-weighted mean of their samples ('template'); facefleet.agent.recognition.matching decides
on them."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from facefleet.vision.vectors import MatchError, unit_vector

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

SFACE_THRESHOLD = 0.363
"""OpenCV's suggested cosine threshold for SFace (sface@2021dec)."""

DEFAULT_CANDIDATES = 1024
"""Rows re-scored from int8 after the Hamming pass (at least; 1/512 of the gallery when that is more);
also the gallery size up to which every row is scored."""

HASH_BITS = 256
_HASH_SEED = 0x5FACE
_CHUNK_ROWS = 65536

Scoring = Literal["best", "template"]
SCORINGS: tuple[Scoring, ...] = ("best", "template")


@dataclass(frozen=True)
class PersonScore:
    """A person and their cosine similarity to a query."""

    person_id: str
    score: float


class GallerySource(Protocol):
    """Where galleries come from; an EmbeddingStore's `gallery` (facefleet.agent.store.gallery) is one."""

    def revision(self) -> int: ...

    def load_embeddings(self, model_id: str) -> tuple[Sequence[str], FloatArray, FloatArray]: ...


@dataclass(frozen=True, eq=False)
class Gallery:
    """One embedding model's gallery, rows grouped by person. Build it with `Gallery.build`.

    person_ids: (P,) distinct ids; row_person: (N,) int32 index into person_ids, non-decreasing;
    person_rows: (P + 1,) int64, person p owns rows person_rows[p]:person_rows[p + 1];
    codes: (N, D) int8 and scales: (N,) float32, row ≈ codes * scale, unit norm;
    qualities: (N,) float32; planes: (HASH_BITS, D) float32; hash_words: (HASH_BITS // 64, N) uint64.
    """

    model_id: str
    person_ids: tuple[str, ...]
    row_person: npt.NDArray[np.int32]
    person_rows: IntArray
    codes: npt.NDArray[np.int8]
    scales: FloatArray
    qualities: FloatArray
    planes: FloatArray
    hash_words: npt.NDArray[np.uint64]
    candidates: int = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        n, d = self.codes.shape
        words = HASH_BITS // 64
        shapes_ok = (
            self.row_person.shape == (n,)
            and self.scales.shape == (n,)
            and self.qualities.shape == (n,)
            and self.person_rows.shape == (len(self.person_ids) + 1,)
            and self.planes.shape == (HASH_BITS, d)
            and self.hash_words.shape == (words, n)
        )
        if not shapes_ok:
            raise MatchError(f"gallery {self.model_id!r}: inconsistent array shapes; use Gallery.build")
        if self.candidates < 1:
            raise MatchError(f"gallery {self.model_id!r}: candidates must be ≥ 1, got {self.candidates}")

    @classmethod
    def build(
        cls,
        model_id: str,
        person_ids: Sequence[str],
        matrix: npt.ArrayLike,
        qualities: npt.ArrayLike | None = None,
        *,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> Gallery:
        """A gallery from per-row person ids (N,), embeddings (N, D) (normalised here) and qualities (N,)."""
        rows = np.asarray(matrix, dtype=np.float32)
        if rows.ndim != 2:
            raise MatchError(f"gallery {model_id!r}: embeddings must be (N, D), got shape {rows.shape}")
        n, d = rows.shape
        if len(person_ids) != n:
            raise MatchError(f"gallery {model_id!r}: {len(person_ids)} person ids for {n} embeddings")
        quality = np.ones(n, np.float32) if qualities is None else np.asarray(qualities, dtype=np.float32)
        if quality.shape != (n,):
            raise MatchError(f"gallery {model_id!r}: qualities must be ({n},), got {quality.shape}")
        index: dict[str, int] = {}
        labels = np.fromiter((index.setdefault(p, len(index)) for p in person_ids), np.int32, count=n)
        order = np.argsort(labels, kind="stable")
        planes = _hyperplanes(d)
        codes = np.empty((n, d), np.int8)
        scales = np.empty(n, np.float32)
        words = np.empty((HASH_BITS // 64, n), np.uint64)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            unit = _unit_rows(rows[order[start:stop]], model_id, [person_ids[i] for i in order[start:stop]])
            scale = np.max(np.abs(unit), axis=1) / 127.0
            codes[start:stop] = np.rint(unit / scale[:, None])
            scales[start:stop] = scale
            words[:, start:stop] = _pack_signs(unit @ planes.T).T
        row_person = labels[order]
        counts = np.bincount(row_person, minlength=len(index))
        person_rows = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return cls(
            model_id=model_id,
            person_ids=tuple(index),
            row_person=row_person,
            person_rows=person_rows,
            codes=codes,
            scales=scales,
            qualities=quality[order],
            planes=planes,
            hash_words=words,
            candidates=candidates,
        )

    @classmethod
    def empty(cls, model_id: str, dim: int = 0) -> Gallery:
        """A gallery with nobody in it: every identification is 'unknown'."""
        return cls.build(model_id, [], np.empty((0, dim), np.float32))

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1])

    @property
    def nbytes(self) -> int:
        """RAM of this gallery's arrays; not the person id strings, nor the hyperplanes shared by every
        gallery of the same dimension (128 KiB at 128-d)."""
        arrays = (self.row_person, self.person_rows, self.codes, self.scales, self.qualities, self.hash_words)
        return sum(a.nbytes for a in arrays)

    def search(self, query: npt.ArrayLike, k: int = 5, scoring: Scoring = "best") -> list[PersonScore]:
        """The k best persons for a (D,) query, best first; at most one entry per person."""
        if scoring == "template":
            return self._templates.search(query, k)
        _check_scoring(scoring)
        if k < 1:
            raise MatchError(f"k must be at least 1, got {k}")
        q = self._query(query)
        if len(self) == 0:
            return []
        rows = self._candidate_rows(q)
        persons, best = self._top_persons(rows, self._row_scores(q, rows), k)
        if rows is not None:  # the Hamming pass may have skipped a found person's best sample
            persons, best = self._rescore_persons(q, persons)
        return [PersonScore(self.person_ids[int(p)], float(s)) for p, s in zip(persons, best, strict=True)]

    def search_many(
        self, queries: npt.ArrayLike, k: int = 5, scoring: Scoring = "best"
    ) -> list[list[PersonScore]]:
        """`search` for each row of a (B, D) batch of queries."""
        batch = np.asarray(queries, dtype=np.float32)
        if batch.ndim != 2:
            raise MatchError(f"queries must be (B, D), got shape {batch.shape}")
        return [self.search(q, k, scoring) for q in batch]

    def verify_score(self, query: npt.ArrayLike, person_id: str, scoring: Scoring = "best") -> float | None:
        """Cosine similarity of a (D,) query to one person, or None when the person is not in the gallery."""
        if scoring == "template":
            return self._templates.verify_score(query, person_id)
        _check_scoring(scoring)
        q = self._query(query)
        p = self._person_index.get(person_id)
        if p is None:
            return None
        rows = np.arange(self.person_rows[p], self.person_rows[p + 1])
        return float(np.max(self._row_scores(q, rows)))

    def _query(self, query: npt.ArrayLike) -> FloatArray:
        q = unit_vector(query, "query embedding")
        if len(self) and q.shape[0] != self.dim:
            raise MatchError(
                f"query embedding has {q.shape[0]} dimensions, the {self.model_id!r} gallery has {self.dim}; "
                "compute the query with the same embedding model"
            )
        return q

    def _candidate_rows(self, q: FloatArray) -> IntArray | None:
        """Rows to score: the `candidates` nearest by Hamming distance (ties kept), or None for all rows."""
        if len(self) <= self.candidates:
            return None
        wanted = max(self.candidates, len(self) // 512)  # big galleries hold more near-misses
        distances = self._hamming(_pack_signs((self.planes @ q)[None, :])[0])
        # the cut comes from a histogram of a regular sample (exact below 2 × _CHUNK_ROWS rows): far cheaper
        # than a full one at 1M rows, and a too-low estimate is caught below
        step = max(1, len(self) // _CHUNK_ROWS)
        rows = _rows_within(distances, step, wanted)
        if rows.size < wanted:
            rows = _rows_within(distances, 1, wanted)
        return rows

    def _hamming(self, query_words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint16]:
        """(N,) Hamming distances between the query's SimHash and every row's, in cache-sized chunks."""
        n = len(self)
        distances = np.empty(n, np.uint16)
        xor = np.empty(min(n, _CHUNK_ROWS), np.uint64)
        ones = np.empty(min(n, _CHUNK_ROWS), np.uint8)
        for start in range(0, n, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n)
            out, x, c = distances[start:stop], xor[: stop - start], ones[: stop - start]
            for j, word in enumerate(self.hash_words):
                np.bitwise_xor(word[start:stop], query_words[j], out=x)
                _popcount(x, c)
                if j == 0:
                    out[...] = c
                else:
                    np.add(out, c, out=out)
        return distances

    def _row_scores(self, q: FloatArray, rows: IntArray | None) -> FloatArray:
        """(R,) dequantised cosine of q to the given rows (None = all rows, in chunks), within [-1, 1]."""
        if rows is not None:
            scores = (self.codes[rows].astype(np.float32) @ q) * self.scales[rows]
        else:
            scores = np.empty(len(self), np.float32)
            for start in range(0, len(self), _CHUNK_ROWS):
                stop = min(start + _CHUNK_ROWS, len(self))
                scores[start:stop] = (self.codes[start:stop].astype(np.float32) @ q) * self.scales[start:stop]
        return np.clip(scores, -1.0, 1.0, out=scores)  # quantisation can overshoot ±1 by ~1e-3

    def _top_persons(
        self, rows: IntArray | None, scores: FloatArray, k: int
    ) -> tuple[npt.NDArray[np.int32], FloatArray]:
        """The k best (person indices, scores), best first, from scores of ascending rows (so each person's
        rows are contiguous) or of all rows."""
        persons = self.row_person if rows is None else self.row_person[rows]
        starts = np.flatnonzero(np.concatenate(([True], persons[1:] != persons[:-1])))
        best = np.maximum.reduceat(scores, starts)
        ids = persons[starts]
        top = np.argpartition(-best, k - 1)[:k] if k < len(best) else np.arange(len(best))
        top = top[np.lexsort((ids[top], -best[top]))]
        return ids[top], best[top]

    def _rescore_persons(
        self, q: FloatArray, persons: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int32], FloatArray]:
        """(person indices, scores) over every sample of these persons, best first."""
        starts, stops = self.person_rows[persons], self.person_rows[persons + 1]
        rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        segments = np.concatenate(([0], np.cumsum(stops - starts)[:-1]))
        best = np.maximum.reduceat(self._row_scores(q, rows), segments)
        order = np.lexsort((persons, -best))
        return persons[order], best[order]

    @functools.cached_property
    def _person_index(self) -> dict[str, int]:
        return {person_id: p for p, person_id in enumerate(self.person_ids)}

    @functools.cached_property
    def _templates(self) -> Gallery:
        """One row per person: the normalised quality-weighted mean of their samples (built on first use)."""
        sums = np.zeros((len(self.person_ids), self.dim), np.float32)
        weights = np.maximum(self.qualities, 1e-3)
        for start in range(0, len(self), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(self))
            row_weights = self.scales[start:stop] * weights[start:stop]
            rows = self.codes[start:stop].astype(np.float32) * row_weights[:, None]
            persons = self.row_person[start:stop]
            starts = np.flatnonzero(np.concatenate(([True], persons[1:] != persons[:-1])))
            sums[persons[starts]] += np.add.reduceat(rows, starts)  # persons[starts] are distinct
        mean_quality = np.add.reduceat(self.qualities, self.person_rows[:-1]) if len(self) else np.empty(0)
        counts = np.diff(self.person_rows)
        return Gallery.build(
            self.model_id,
            self.person_ids,
            sums,
            (mean_quality / np.maximum(counts, 1)).astype(np.float32),
            candidates=self.candidates,
        )


def _rows_within(distances: npt.NDArray[np.uint16], step: int, wanted: int) -> IntArray:
    """Rows within the smallest distance cut that keeps ≥ `wanted` rows, estimated from every step-th row."""
    at_most = np.cumsum(np.bincount(distances[::step], minlength=HASH_BITS + 1)) * step
    cut = int(np.searchsorted(at_most, wanted))
    return np.flatnonzero(distances <= cut)


def _check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise MatchError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")


def _unit_rows(rows: FloatArray, model_id: str, person_ids: Sequence[str]) -> FloatArray:
    """(n, D) rows scaled to unit norm; a MatchError naming the person of the first NaN/inf/zero row."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    bad = np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))
    if bad.size:
        raise MatchError(
            f"gallery {model_id!r}: the embedding of person {person_ids[int(bad[0])]!r} is zero, NaN or "
            "infinite; re-enrol that person"
        )
    unit: FloatArray = (rows / norms[:, None]).astype(np.float32)
    return unit


@functools.cache
def _hyperplanes(dim: int) -> FloatArray:
    """(HASH_BITS, dim) SimHash hyperplanes: stacked random orthonormal bases, the same in every process
    (shared, read-only)."""
    if dim == 0:
        return np.empty((HASH_BITS, 0), np.float32)
    rng = np.random.default_rng([_HASH_SEED, dim])
    blocks = [np.linalg.qr(rng.standard_normal((dim, dim)))[0].T for _ in range(math.ceil(HASH_BITS / dim))]
    planes = np.concatenate(blocks)[:HASH_BITS].astype(np.float32)
    planes.flags.writeable = False
    return planes


def _pack_signs(projections: FloatArray) -> npt.NDArray[np.uint64]:
    """(n, HASH_BITS) projections → (n, HASH_BITS // 64) uint64 words of their sign bits."""
    packed = np.packbits(projections > 0, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


_BITWISE_COUNT: Any = getattr(np, "bitwise_count", None)
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _popcount(words: npt.NDArray[np.uint64], out: npt.NDArray[np.uint8]) -> None:
    """Set bits per uint64 word: one SIMD instruction with numpy ≥ 2.0, a byte table otherwise."""
    if _BITWISE_COUNT is not None:
        _BITWISE_COUNT(words, out=out)
    else:
        np.sum(_BYTE_POPCOUNT[words.view(np.uint8).reshape(-1, 8)], axis=1, out=out)
