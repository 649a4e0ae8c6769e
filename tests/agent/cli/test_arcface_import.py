"""A user's own ArcFace-class embedding model (N×3×112×112 face → N×512 embedding, ONNX) goes into the store
through `models import`, is accepted as an embedding model, and embeds real faces as 512-d unit vectors that
tell the people of the group photo apart; a door has a threshold for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.cli.main import main
from facefleet.core.errors import EXIT_OK
from facefleet.vision.models.store import ModelStore

pytest.importorskip("onnx")
from tests.vision.models.arcface_onnx import DIMENSION, arcface_class_onnx


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_arcface_class_onnx_imports_as_an_embedding_model_and_embeds_real_faces(
    model_store: ModelStore,
    model_cache: Path,
    photo_paths: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "state"
    shutil.copytree(model_store.root, state / "models")
    shutil.copytree(model_cache, state / "cache")
    onnx_path = arcface_class_onnx(tmp_path / "arcface.onnx")
    base = ["--state-dir", str(state)]

    code, out, err = cli(
        capsys,
        *base,
        "models",
        "import",
        str(onnx_path),
        "--task",
        "embedding",
        "--name",
        "arcface",
        "--version",
        "r1",
        "--activate",
        "--json",
    )
    assert code == EXIT_OK, err
    [shown] = json.loads(out)
    assert (shown["task"], shown["active"]) == ("embedding", True)
    assert [output["shape"][-1] for output in shown["outputs"]] == [DIMENSION]
    active = ModelStore(state / "models").active("embedding")
    assert active.manifest.model_id == "arcface@r1"

    code, out, err = cli(capsys, *base, "analyze", str(photo_paths["t1"]), "--embeddings", "--json")
    assert code == EXIT_OK, err
    [result] = json.loads(out)["images"]
    faces = result["faces"]
    assert len(faces) == 6
    assert {face["embedding_model"] for face in faces} == {"arcface@r1"}
    vectors = np.array([face["embedding"] for face in faces], dtype=np.float32)
    assert vectors.shape == (6, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert np.all(similarity[~np.eye(6, dtype=bool)] < 0.9999)  # different faces, different embeddings

    config = tmp_path / "agent.toml"
    config.write_text(
        '[[cameras]]\nname = "cam"\nsource = "0"\n\n[[doors]]\nname = "front"\ncamera = "cam"\n'
    )
    code, out, err = cli(capsys, "check-config", str(config), "--json")
    assert code == EXIT_OK, err
    other = json.loads(out)["doors"][0]["effective_threshold"]["*"]
    assert other["source"] == "matching.door_default_threshold" and other["threshold"] >= 0.5
