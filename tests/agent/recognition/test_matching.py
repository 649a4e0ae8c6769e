"""Matching: compact vs exact float32 search, person scoring, the decision policy, calibration."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from facefleet.agent.recognition.gallery import SFACE_THRESHOLD, Gallery, PersonScore
from facefleet.agent.recognition.matching import DecisionPolicy, Matcher, calibrate_threshold
from facefleet.vision.vectors import MatchError, unit_vector

MODEL = "sface@2021dec"
DIM = 128
FloatArray = npt.NDArray[np.float32]


def normalised(rows: npt.ArrayLike) -> FloatArray:
    array = np.asarray(rows, dtype=np.float64)
    unit: FloatArray = (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)
    return unit


def noisy(rng: np.random.Generator, vector: FloatArray, noise: float) -> FloatArray:
    """A unit vector near `vector`: cosine ≈ 1 / sqrt(1 + noise²)."""
    return normalised(vector + noise * rng.standard_normal(vector.shape[-1]) / np.sqrt(vector.shape[-1]))


def enrolled(rng: np.random.Generator, persons: int, samples: int) -> tuple[list[str], FloatArray]:
    """persons × samples rows, each person's samples scattered around their own random centre."""
    centres = normalised(rng.standard_normal((persons, DIM)))
    rows = normalised(
        np.repeat(centres, samples, axis=0) + 0.6 * rng.standard_normal((persons * samples, DIM)) / 11
    )
    ids = [f"person-{p}" for p in range(persons) for _ in range(samples)]
    return ids, rows


def exact_top1(ids: Sequence[str], rows: FloatArray, query: FloatArray) -> tuple[str, float]:
    """Plain float32 brute force: the person of the best row, and its score."""
    scores = rows @ query
    best = int(np.argmax(scores))
    return ids[best], float(scores[best])


def basis(*weights: tuple[int, float]) -> FloatArray:
    """A unit vector from (axis, weight) pairs, e.g. basis((0, 0.8), (1, 0.6))."""
    vector = np.zeros(DIM, np.float32)
    for axis, weight in weights:
        vector[axis] = weight
    return normalised(vector)


def matcher_with(ids: Sequence[str], rows: npt.ArrayLike, policy: DecisionPolicy | None = None) -> Matcher:
    matcher = Matcher(policy)
    matcher.set_gallery(Gallery.build(MODEL, ids, rows))
    return matcher


# ---- compact search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("candidates", [8, 64])
def test_compact_search_gives_the_exact_top1_person(seed: int, candidates: int) -> None:
    rng = np.random.default_rng(seed)
    ids, rows = enrolled(rng, persons=1500, samples=4)
    gallery = Gallery.build(MODEL, ids, rows, candidates=candidates)
    assert len(gallery) > gallery.candidates, "the Hamming pass must be exercised"
    for noise in (0.4, 0.8, 1.2):  # cosine to the source sample ≈ 0.93, 0.78, 0.64
        for source in rng.integers(len(ids), size=40):
            query = noisy(rng, rows[source], noise)
            person, score = exact_top1(ids, rows, query)
            found = gallery.search(query, k=3)
            assert found[0].person_id == person
            assert found[0].score == pytest.approx(score, abs=3e-3)
            for ranked in found:  # each found person's score is their best sample, even one the pass skipped
                samples = rows[[i for i, p in enumerate(ids) if p == ranked.person_id]]
                assert ranked.score == pytest.approx(float(np.max(samples @ query)), abs=3e-3)


def test_search_ranks_each_person_once_by_their_best_sample() -> None:
    rng = np.random.default_rng(7)
    ids, rows = enrolled(rng, persons=300, samples=5)
    gallery = Gallery.build(MODEL, ids, rows, candidates=len(ids))  # every row scored
    query = noisy(rng, rows[42], 0.5)
    ranked = gallery.search(query, k=10)
    exact = {p: max(float(r @ query) for i, r in zip(ids, rows, strict=True) if i == p) for p in set(ids)}
    eleventh = sorted(exact.values(), reverse=True)[10]
    assert len({r.person_id for r in ranked}) == len(ranked) == 10
    assert ranked[0].person_id == "person-8"
    assert all(r.score == pytest.approx(exact[r.person_id], abs=3e-3) for r in ranked)
    assert all(a.score >= b.score for a, b in itertools.pairwise(ranked))
    assert min(exact[r.person_id] for r in ranked) >= eleventh - 6e-3


def test_search_many_equals_one_search_per_query() -> None:
    rng = np.random.default_rng(3)
    ids, rows = enrolled(rng, persons=200, samples=3)
    gallery = Gallery.build(MODEL, ids, rows, candidates=16)
    queries = np.stack([noisy(rng, rows[i], 0.7) for i in (0, 100, 599)])
    assert gallery.search_many(queries, k=3) == [gallery.search(q, k=3) for q in queries]


def test_compact_gallery_is_smaller_than_float32() -> None:
    rng = np.random.default_rng(0)
    ids, rows = enrolled(rng, persons=2000, samples=5)
    gallery = Gallery.build(MODEL, ids, rows)
    per_row = gallery.nbytes / len(gallery)
    assert per_row <= 300
    assert per_row < rows.nbytes / len(rows) / 2


@pytest.mark.parametrize(
    ("person_ids", "rows", "expected"),
    [
        ([], np.empty((0, DIM), np.float32), []),
        (["a"], basis((0, 1.0))[None, :], ["a"]),
        (
            ["a", "b", "a"],
            np.stack([basis((1, 1.0)), basis((0, 0.9), (1, 0.1)), basis((0, 1.0))]),
            ["a", "b"],
        ),
    ],
)
def test_search_table(person_ids: list[str], rows: FloatArray, expected: list[str]) -> None:
    gallery = Gallery.build(MODEL, person_ids, rows)
    assert [r.person_id for r in gallery.search(basis((0, 1.0)), k=5)] == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.full(DIM, np.nan, np.float32), "NaN"),
        (np.r_[np.inf, np.zeros(DIM - 1)], "NaN or infinity"),
        (np.zeros(DIM, np.float32), "all zeros"),
        (np.ones(DIM // 2, np.float32), "64 dimensions"),
        (np.ones((2, DIM), np.float32), "1-D"),
        (np.empty(0, np.float32), "1-D"),
    ],
)
def test_bad_queries_are_rejected_with_a_clear_error(query: FloatArray, message: str) -> None:
    gallery = Gallery.build(MODEL, ["a"], basis((0, 1.0))[None, :])
    with pytest.raises(MatchError, match=message):
        gallery.search(query)


def test_gallery_rejects_a_nan_embedding_naming_the_person() -> None:
    rows = np.stack([basis((0, 1.0)), np.full(DIM, np.nan, np.float32)])
    with pytest.raises(MatchError, match="'bob'"):
        Gallery.build(MODEL, ["alice", "bob"], rows)


@given(
    hnp.arrays(
        np.float32, st.integers(1, 512), elements=st.floats(allow_nan=False, allow_infinity=False, width=32)
    )
)
def test_unit_vector_is_unit_and_idempotent(vector: FloatArray) -> None:
    if not np.any(vector):
        with pytest.raises(MatchError):
            unit_vector(vector)
        return
    once = unit_vector(vector)
    assert once.dtype == np.float32
    assert np.linalg.norm(once.astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(unit_vector(once), once)


# ---- person scoring ---------------------------------------------------------------------------------------


def test_best_sample_and_template_scoring_rank_persons_differently() -> None:
    # alice: one sample very close to the query and two far away; bob: two samples both fairly close
    ids = ["alice", "alice", "alice", "bob", "bob"]
    rows = np.stack(
        [
            basis((0, 0.9), (1, 0.436)),
            basis((2, 1.0)),
            basis((3, 1.0)),
            basis((0, 0.8), (4, 0.6)),
            basis((0, 0.8), (5, 0.6)),
        ]
    )
    gallery = Gallery.build(MODEL, ids, rows)
    query = basis((0, 1.0))
    best = gallery.search(query, k=2, scoring="best")
    template = gallery.search(query, k=2, scoring="template")
    assert [p.person_id for p in best] == ["alice", "bob"]
    assert best[0].score == pytest.approx(0.9, abs=3e-3)
    assert [p.person_id for p in template] == ["bob", "alice"]
    assert template[0].score == pytest.approx(0.8 / np.sqrt(0.82), abs=3e-3)  # mean of bob's two samples
    assert gallery.verify_score(query, "alice", "template") == pytest.approx(0.9 / np.sqrt(3.0), abs=3e-3)


def test_unknown_scoring_is_an_error() -> None:
    gallery = Gallery.build(MODEL, ["a"], basis((0, 1.0))[None, :])
    with pytest.raises(MatchError, match="scoring must be one of best, template"):
        gallery.search(basis((0, 1.0)), scoring="mean")  # type: ignore[arg-type]


# ---- decisions --------------------------------------------------------------------------------------------


def test_identify_matches_the_enrolled_person() -> None:
    rng = np.random.default_rng(1)
    ids, rows = enrolled(rng, persons=50, samples=3)
    decision = matcher_with(ids, rows).identify(noisy(rng, rows[31], 0.3), MODEL)
    assert decision.status == "match"
    assert decision.accepted
    assert decision.person_id == "person-10"
    assert decision.score is not None and decision.score >= SFACE_THRESHOLD
    assert decision.margin is not None and decision.margin > 0.05


def test_a_stranger_is_unknown() -> None:
    rng = np.random.default_rng(2)
    ids, rows = enrolled(rng, persons=50, samples=3)
    decision = matcher_with(ids, rows).identify(normalised(rng.standard_normal(DIM)), MODEL)
    assert decision.status == "unknown"
    assert decision.person_id is None
    assert decision.score is not None and decision.score < SFACE_THRESHOLD
    assert "threshold" in decision.reason


@pytest.mark.parametrize(("bob_cosine", "status"), [(0.78, "ambiguous"), (0.72, "match")])
def test_ambiguity_margin_fires_when_two_persons_are_near(bob_cosine: float, status: str) -> None:
    rows = [basis((0, 0.8), (1, 0.6)), basis((0, bob_cosine), (2, np.sqrt(1 - bob_cosine**2)))]
    matcher = matcher_with(["alice", "bob"], rows, DecisionPolicy(ambiguity_margin=0.05))
    decision = matcher.identify(basis((0, 1.0)), MODEL)
    assert decision.status == status
    assert decision.margin == pytest.approx(0.8 - bob_cosine, abs=3e-3)
    assert [c.person_id for c in decision.candidates[:2]] == ["alice", "bob"]
    if status == "ambiguous":
        assert decision.person_id is None
        assert "'alice'" in decision.reason and "'bob'" in decision.reason
    else:
        assert decision.person_id == "alice"


def test_low_quality_faces_are_undecided() -> None:
    matcher = matcher_with(["alice"], [basis((0, 1.0))], DecisionPolicy(min_quality=0.5))
    query = basis((0, 1.0))
    poor = matcher.identify(query, MODEL, quality=0.3)
    assert poor.status == "undecided"
    assert poor.person_id is None
    assert "quality too low" in poor.reason
    assert matcher.verify(query, MODEL, "alice", quality=0.3).status == "undecided"
    assert matcher.identify(query, MODEL, quality=0.8).status == "match"
    assert matcher.identify(query, MODEL).status == "match"  # no quality given: not gated


def test_verify_accepts_the_right_claim_and_rejects_others() -> None:
    rng = np.random.default_rng(4)
    ids, rows = enrolled(rng, persons=20, samples=2)
    matcher = matcher_with(ids, rows)
    query = noisy(rng, rows[6], 0.3)  # person-3
    right = matcher.verify(query, MODEL, "person-3")
    wrong = matcher.verify(query, MODEL, "person-4")
    absent = matcher.verify(query, MODEL, "nobody")
    assert (right.status, right.person_id) == ("match", "person-3")
    assert (wrong.status, wrong.person_id) == ("unknown", None)
    assert "claim rejected" in wrong.reason
    assert wrong.score is not None and wrong.score < SFACE_THRESHOLD
    assert absent.status == "unknown" and "not enrolled" in absent.reason


def test_empty_gallery_identifies_nobody() -> None:
    matcher = Matcher()
    matcher.set_gallery(Gallery.build(MODEL, [], np.empty((0, DIM), np.float32)))
    decision = matcher.identify(basis((0, 1.0)), MODEL)
    assert (decision.status, decision.person_id, decision.score) == ("unknown", None, None)
    assert decision.reason == "gallery is empty"
    assert matcher.verify(basis((0, 1.0)), MODEL, "alice").status == "unknown"
    assert Gallery.empty(MODEL).search(basis((0, 1.0))) == []


def test_thresholds_are_per_model() -> None:
    policy = DecisionPolicy(thresholds={"strict@1": 0.9})
    ranked = [PersonScore("alice", 0.8)]
    assert policy.decide(MODEL, ranked).status == "match"
    assert policy.decide("strict@1", ranked).status == "unknown"
    assert policy.threshold(MODEL) == SFACE_THRESHOLD


def test_identify_with_a_model_that_is_not_loaded_is_an_error() -> None:
    with pytest.raises(MatchError, match="no gallery loaded for embedding model 'other@1'"):
        matcher_with(["a"], [basis((0, 1.0))]).identify(basis((0, 1.0)), "other@1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_threshold": 1.5},
        {"thresholds": {"m": -2.0}},
        {"ambiguity_margin": -0.1},
        {"min_quality": 2.0},
    ],
)
def test_policy_rejects_impossible_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(MatchError):
        DecisionPolicy(**kwargs)  # type: ignore[arg-type]


class _Source:
    """A GallerySource in memory: the protocol the store implements."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[list[str], FloatArray]] = {
            MODEL: (["alice"], normalised([basis((0, 1.0))]))
        }
        self.current = 1
        self.loads = 0

    def revision(self) -> int:
        return self.current

    def load_embeddings(self, model_id: str) -> tuple[list[str], FloatArray, FloatArray]:
        self.loads += 1
        ids, rows = self.rows[model_id]
        return ids, rows, np.ones(len(ids), np.float32)


def test_refresh_reloads_only_when_the_revision_changes() -> None:
    source, matcher = _Source(), Matcher()
    assert matcher.refresh(source, [MODEL])
    assert not matcher.refresh(source, [MODEL])
    assert source.loads == 1
    bob = basis((1, 1.0))
    source.rows[MODEL] = (["alice", "bob"], np.stack([basis((0, 1.0)), bob]))
    source.current = 2
    assert matcher.identify(bob, MODEL).status == "unknown"  # stale until refreshed
    assert matcher.refresh(source, [MODEL])
    assert matcher.identify(bob, MODEL).person_id == "bob"
    assert matcher.revision == 2


# ---- calibration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_far", [0.1, 0.01, 0.001])
def test_calibration_meets_the_target_false_accept_rate(target_far: float) -> None:
    rng = np.random.default_rng(5)
    genuine = rng.normal(0.7, 0.1, 20_000)
    impostor = rng.normal(0.1, 0.1, 100_000)
    calibration = calibrate_threshold(genuine, impostor, target_far)
    assert calibration.far <= target_far
    assert calibration.far == np.mean(impostor >= calibration.threshold)
    assert calibration.frr == np.mean(genuine < calibration.threshold)
    # the lowest such threshold: one step lower accepts too many impostors
    assert np.mean(impostor >= np.nextafter(calibration.threshold, -np.inf)) > target_far
    assert calibration.far > 0.8 * target_far
    assert (calibration.genuine_count, calibration.impostor_count) == (20_000, 100_000)


def test_calibration_below_the_measurable_far_excludes_every_impostor() -> None:
    calibration = calibrate_threshold([0.9, 0.8], [0.1, 0.3, 0.2], 0.01)
    assert calibration.far == 0.0
    assert 0.3 < calibration.threshold < 0.31
    assert calibration.frr == 0.0


@pytest.mark.parametrize(
    ("genuine", "impostor", "target_far"),
    [([], [0.1], 0.1), ([0.5], [], 0.1), ([0.5], [np.nan], 0.1), ([0.5], [0.1], 0.0), ([0.5], [0.1], 1.5)],
)
def test_calibration_rejects_bad_input(
    genuine: list[float], impostor: list[float], target_far: float
) -> None:
    with pytest.raises(MatchError):
        calibrate_threshold(genuine, impostor, target_far)
