"""Re-embedding the enrolled people with a new embedding model from their retained aligned crops, so the
gallery is complete for that model before any agent is told to use it.

Each crop is the 112×112 aligned BGR face the enrolment kept (PNG or JPEG); it goes through the very same
input conversion and L2 normalisation as enrolment (facefleet.vision.preprocess), so a re-embedded face
matches what the enroller computes for the same image with that model. Each person's new embeddings replace
only that model's embeddings, as one gallery revision; their crops and other models' embeddings stay. The
replacement happens only if the person is still at the revision read with the crops: a person re-enrolled or
changed meanwhile is read and embedded again (a few times at most; one changing faster is left to the
enroller, which embeds with the rollout's model, and to the rollout's second sweep)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.link.checks import utc_now
from facefleet.link.gallery import Embedding
from facefleet.server.domain.records import Crop
from facefleet.server.errors import InvalidArgumentError, NotFoundError
from facefleet.server.state.interface import State
from facefleet.vision.models.store import StoredModel
from facefleet.vision.preprocess import embedding_input, normalise_embeddings
from facefleet.vision.runtime import Runtime

log = logging.getLogger(__name__)

CROP_SIZE = 112
_PAGE = 500
_ATTEMPTS = 3
Outcome = Literal["done", "without_crops", "gone", "changing"]


@dataclass(frozen=True)
class ReembedResult:
    """People given embeddings of the model, and people who could not be (no usable crop), both sorted."""

    model_id: str
    reembedded: tuple[str, ...]
    without_crops: tuple[str, ...]


class CropEmbedder:
    """One embedding model compiled for single 1×3×112×112 crops."""

    def __init__(self, runtime: Runtime, model: StoredModel) -> None:
        if model.manifest.task != "embedding":
            raise InvalidArgumentError(f"model {model.manifest.model_id} is a {model.manifest.task} model")
        self.model_id = model.manifest.model_id
        self._net = runtime.compile(model.xml_path, input_shape=(1, 3, CROP_SIZE, CROP_SIZE))

    def embed(self, crop_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(112, 112, 3) uint8 BGR aligned face → (D,) float32, L2-normalised."""
        raw = next(iter(self._net.infer(embedding_input(crop_bgr)[None]).values()))
        unit: npt.NDArray[np.float32] = normalise_embeddings(raw)[0]
        return unit

    def embed_crops(self, crops: Sequence[Crop], quality: dict[str, float]) -> list[Embedding]:
        """Embeddings of the crops that decode to a 112×112 colour face (others are skipped); quality:
        the enrolment quality by crop source."""
        found = []
        for crop in crops:
            image = cv2.imdecode(np.frombuffer(crop.data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None or image.shape != (CROP_SIZE, CROP_SIZE, 3):
                continue
            vector = self.embed(np.asarray(image, dtype=np.uint8))
            if float(np.linalg.norm(vector)) > 0.5:
                found.append(Embedding(self.model_id, vector, quality.get(crop.source, 0.0), crop.source))
        return found


def reembed(
    state: State,
    embedder: CropEmbedder,
    person_ids: Sequence[str] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> ReembedResult:
    """Re-embed people (all when person_ids is None) from their crops; progress(done, total)."""
    ids = list(person_ids) if person_ids is not None else _all_people(state)
    done: list[str] = []
    without: list[str] = []
    for index, person_id in enumerate(ids):
        outcome = _reembed_one(state, embedder, person_id, clock)
        if outcome == "done":
            done.append(person_id)
        elif outcome == "without_crops":
            without.append(person_id)
        if progress is not None:
            progress(index + 1, len(ids))
    return ReembedResult(embedder.model_id, tuple(sorted(done)), tuple(sorted(without)))


def _reembed_one(
    state: State, embedder: CropEmbedder, person_id: str, clock: Callable[[], datetime]
) -> Outcome:
    """Embed a person's crops and store the result unless the person changed meanwhile (a re-enrolment
    must not be overwritten from older crops): then read again, up to _ATTEMPTS times."""
    for _ in range(_ATTEMPTS):
        try:  # the person first: any change after this read moves its revision
            person = state.get_person(person_id, with_vectors=True)
        except NotFoundError:
            return "gone"
        quality = {e.source: e.quality for e in person.embeddings}
        embeddings = embedder.embed_crops(state.crops(person_id), quality)
        if not embeddings:
            return "without_crops"
        try:
            stored = state.replace_model_embeddings(
                person_id, embedder.model_id, embeddings, clock(), revision=person.revision
            )
        except InvalidArgumentError as exc:  # too many crops for one more model: re-enrol with fewer
            log.warning("%s", exc)
            return "without_crops"
        if stored is not None:
            return "done"
    return "changing"


def _all_people(state: State) -> list[str]:
    ids: list[str] = []
    while True:
        page = state.list_people(after=ids[-1] if ids else "", limit=_PAGE)
        ids.extend(p.person_id for p in page)
        if len(page) < _PAGE:
            return ids
