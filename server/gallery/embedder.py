"""Embeddings of enrolment images, computed with the agents' own vision pipeline.

Each image must show exactly one face good enough for recognition (the agents' quality policy); otherwise
the request fails with InvalidArgumentError naming the image index and the reason. Every good face is embedded
by every enrolment model: the analyzer's active embedding model, plus any other stored embedding model the
config lists (run on the same aligned crop). The aligned 112×112 crop is kept, unless configured off, so a
future model can re-embed the gallery without the original photos.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.core.errors import FaceFleetError
from facefleet.link.gallery import Embedding
from facefleet.server.domain.records import Crop, EnrolledFace
from facefleet.server.errors import FailedPreconditionError, InvalidArgumentError
from facefleet.vision.alignment import align_face
from facefleet.vision.errors import ImageError
from facefleet.vision.faces import Face
from facefleet.vision.images import decode_image
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.models.tasks import embedding_dimension
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.preprocess import embedding_input, normalise_embeddings
from facefleet.vision.quality import QualityPolicy
from facefleet.vision.runtime import CompiledNet, ModelIO, Runtime

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class EnrolmentSettings:
    """model_ids: models to embed with (empty = the analyzer's active one); limits on each image."""

    model_ids: tuple[str, ...] = ()
    retain_crops: bool = True
    crop_format: Literal["png", "jpeg"] = "png"
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    quality: QualityPolicy = field(default_factory=QualityPolicy)


@dataclass(frozen=True)
class EmbeddedImages:
    embeddings: tuple[Embedding, ...]
    crops: tuple[Crop, ...]
    faces: tuple[EnrolledFace, ...]


class Enroller:
    """Turns enrolment images into embeddings (thread-safe; one image at a time)."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        store: ModelStore,
        runtime: Runtime,
        settings: EnrolmentSettings,
        compiled: Mapping[str, CompiledNet] | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.settings = settings
        self._runtime = runtime
        compiled = compiled or {}
        active = analyzer.embedding_model
        if active is None:
            raise FailedPreconditionError("the enrolment analyzer computes no embeddings")
        wanted = settings.model_ids or (active.manifest.model_id,)
        self.dimensions: dict[str, int] = {}
        self._extra: dict[str, CompiledNet] = {}
        for model_id in wanted:
            model = (
                active if model_id == active.manifest.model_id else _stored_embedding_model(store, model_id)
            )
            self.dimensions[model_id] = _dimension(model)
            if model is not active:
                store.check(model)
                self._extra[model_id] = compiled.get(model_id) or runtime.compile(
                    model.xml_path, input_shape=(-1, 3, 112, 112)
                )
        self._use_active = active.manifest.model_id in self.dimensions
        self._lock = threading.Lock()

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(self.dimensions)

    def with_models(self, model_ids: tuple[str, ...], store: ModelStore) -> Enroller:
        """An enroller on the same analyzer that embeds with model_ids (looked up in store; models this
        one compiled already are reused)."""
        settings = replace(self.settings, model_ids=model_ids)
        return Enroller(self.analyzer, store, self._runtime, settings, compiled=self._extra)

    def embed(self, images: Sequence[bytes]) -> EmbeddedImages:
        """One face per image → its embeddings for every model, its crop, and what was found."""
        embeddings: list[Embedding] = []
        crops: list[Crop] = []
        faces: list[EnrolledFace] = []
        with self._lock:
            for index, data in enumerate(images):
                frame = self._decode(index, data)
                face = self._one_good_face(index, self.analyzer.analyze(frame))
                crop = align_face(frame, face.detection.landmarks_xy)
                source = f"image:{index}"
                found = self._embeddings(face, crop, source)
                embeddings.extend(found)
                if self.settings.retain_crops:
                    crops.append(
                        Crop(self.settings.crop_format, _encode(crop, self.settings.crop_format), source)
                    )
                box = tuple(float(v) for v in face.detection.box_xyxy)
                faces.append(
                    EnrolledFace(
                        index, (box[0], box[1], box[2], box[3]), face.quality.score, tuple(self.dimensions)
                    )
                )
        return EmbeddedImages(tuple(embeddings), tuple(crops), tuple(faces))

    def embed_crops(
        self, crops: Sequence[tuple[Frame, float, str]], skip: Collection[str] = ()
    ) -> list[Embedding]:
        """Embeddings of aligned 112×112 BGR face crops (crop, quality 0–1, source) for every model of this
        enroller except those in skip (e.g. the model the crops' own embeddings come from)."""
        found: list[Embedding] = []
        with self._lock:
            for model_id in self.dimensions:
                if model_id in skip:
                    continue
                extra = self._extra.get(model_id)
                for crop, quality, source in crops:
                    tensor = embedding_input(crop)[None]
                    net = extra or self.analyzer.net("embedding", tensor.shape)
                    raw = next(iter(net.infer(tensor).values()))
                    found.append(Embedding(model_id, normalise_embeddings(raw)[0], quality, source))
        return found

    def _decode(self, index: int, data: bytes) -> Frame:
        if not data:
            raise InvalidArgumentError(f"images[{index}] is empty")
        if len(data) > self.settings.max_image_bytes:
            raise InvalidArgumentError(
                f"images[{index}] is {len(data) / 2**20:.1f} MiB, over the "
                f"{self.settings.max_image_bytes / 2**20:.0f} MiB limit; send a smaller JPEG"
            )
        try:
            return decode_image(data, f"images[{index}]", self.settings.max_image_pixels)
        except ImageError as exc:
            raise InvalidArgumentError(str(exc)) from None

    def _one_good_face(self, index: int, faces: list[Face]) -> Face:
        if not faces:
            raise InvalidArgumentError(
                f"images[{index}]: no face found; use a sharp, well-lit photo with the face at least "
                f"{self.settings.quality.min_face_px:.0f} px high"
            )
        good = [f for f in faces if not self.settings.quality.rejections(f.quality)]
        if len(good) > 1:
            raise InvalidArgumentError(
                f"images[{index}]: {len(good)} faces are good enough for enrolment; crop the image to "
                "the one person being enrolled"
            )
        if not good:
            reasons = "; ".join(self.settings.quality.rejections(faces[0].quality))
            raise InvalidArgumentError(f"images[{index}]: the face is not good enough to enrol: {reasons}")
        return good[0]

    def _embeddings(self, face: Face, crop: Frame, source: str) -> list[Embedding]:
        quality = float(np.clip(face.quality.score, 0.0, 1.0))
        found = []
        if self._use_active and face.embedding is not None and face.embedding_model:
            found.append(Embedding(face.embedding_model, face.embedding, quality, source))
        for model_id, net in self._extra.items():
            raw = next(iter(net.infer(embedding_input(crop)[None]).values()))
            found.append(Embedding(model_id, normalise_embeddings(raw)[0], quality, source))
        return found


def _stored_embedding_model(store: ModelStore, model_id: str) -> StoredModel:
    name, _, version = model_id.partition("@")
    try:
        return store.get("embedding", name, version)
    except FaceFleetError:
        raise FailedPreconditionError(
            f"embedding model {model_id} (gallery.embedding_models) is not in the model store {store.root}; "
            "import it or remove it from the config"
        ) from None


def _dimension(model: StoredModel) -> int:
    return embedding_dimension(ModelIO(model.manifest.inputs, model.manifest.outputs))


def _encode(crop: Frame, image_format: str) -> bytes:
    ok, encoded = cv2.imencode(".png" if image_format == "png" else ".jpg", crop)
    if not ok:
        raise RuntimeError("cannot encode an aligned face crop")
    return bytes(encoded.tobytes())
