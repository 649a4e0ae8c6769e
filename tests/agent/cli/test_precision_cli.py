"""Precision per device from the command line: `models tune`, the precision column of `models list`, what
`devices` says each active model runs at, and the [runtime] precision settings' validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facefleet.agent.cli.main import main
from facefleet.vision.models.store import ModelStore
from facefleet.vision.precision.cache import PrecisionCache, cache_path
from facefleet.vision.precision.plan import PrecisionPlan
from facefleet.vision.runtime import Runtime, RuntimeSettings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def state_dir(model_store: ModelStore, tmp_path: Path) -> Path:
    """The session's models and a cache of its own (choices written here must not reach other tests)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    return state


@pytest.fixture
def measured(state_dir: Path, model_store: ModelStore) -> PrecisionPlan:
    """The expression model measured into the state's cache (latencies injected, guards real)."""
    runtime = Runtime(RuntimeSettings(cache_dir=state_dir / "cache"))
    plan = PrecisionPlan(
        runtime,
        model_store,
        cache=PrecisionCache(cache_path(state_dir)),
        timer=lambda label, run: {"f32": 8.0, "bf16": 4.0, "f16": 4.0}[label],
    )
    plan.tune(model_store.active("expression"))
    return plan


def test_models_list_and_devices_show_what_each_model_runs_at(
    state_dir: Path,
    measured: PrecisionPlan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[runtime]\nprecision = { embedding = "f32" }\n')
    base = ("--config", str(config), "--state-dir", str(state_dir))
    code, out, err = run(capsys, *base, "models", "list", "--json")
    assert code == 0, err
    runs_at = {m["task"]: m["runs_at"] for m in json.loads(out) if m["active"]}
    expected = "bf16" if "bf16" in measured.runtime.hint_precisions() else "f32"
    assert runs_at["expression"]["source"] == "auto" and runs_at["expression"]["precision"] == expected
    assert runs_at["embedding"] == {
        "precision": "f32",
        "variant": None,
        "source": "task override",
        "reason": "[runtime] precision.embedding = 'f32'",
    }
    assert runs_at["detection"]["source"] == "default" and "models tune" in runs_at["detection"]["reason"]
    assert runs_at["landmarks"]["reason"] == "f32: landmarks models have no accuracy guard to tune"

    code, out, err = run(capsys, *base, "devices", "--json")
    assert code == 0, err
    report = json.loads(out)
    models = {m["task"]: m for m in report["models"]}
    assert report["device"] == "CPU" and set(models) == set(runs_at)
    assert (
        models["embedding"]["model"] == "sface@2021dec" and models["embedding"]["source"] == "task override"
    )
    assert models["expression"]["precision"] == expected

    code, out, _ = run(capsys, *base, "models", "list")
    assert code == 0 and "runs at" in out
    assert any("embedding" in line and "(task override)" in line for line in out.splitlines()), out


def test_a_global_override_shows_everywhere(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[runtime]\ninference_precision = "f32"\n')
    code, out, err = run(capsys, "--config", str(config), "--state-dir", str(state_dir), "devices", "--json")
    assert code == 0, err
    assert {(m["precision"], m["source"]) for m in json.loads(out)["models"]} == {("f32", "override")}


@pytest.mark.slow  # measures the four tuned models for real: ~10 s
def test_models_tune_json_measures_caches_and_reuses(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--state-dir", str(state_dir), "models", "tune", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["device"] == "CPU" and report["openvino"] and report["device_name"].startswith("CPU")
    results = {r["task"]: r for r in report["models"]}
    assert set(results) == {"detection", "embedding", "expression", "attributes"}
    for result in results.values():
        assert not result["cached"]
        labels = [m["candidate"] for m in result["measurements"]]
        assert labels[0] == "f32" and all(m["median_ms"] > 0 for m in result["measurements"])
        chosen = result["chosen"]
        assert chosen["source"] == "auto" and chosen["reason"].startswith("measured: ")
        assert any(
            m["precision"] == chosen["precision"] and m["guard"]["passed"] for m in result["measurements"]
        )
    assert (state_dir / "cache" / "precision.json").is_file()
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "models", "tune", "--json")
    assert code == 0 and all(r["cached"] for r in json.loads(out)["models"])
    code, out, _ = run(capsys, "--state-dir", str(state_dir), "models", "tune")
    assert code == 0 and "median ms" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[runtime]\nprecision = { embeding = "f32" }\n',
            "'runtime.precision': unknown task 'embeding'; the keys of [runtime] precision are "
            "tasks: detection, embedding, expression, landmarks, attributes",
        ),
        (
            '[runtime]\nprecision = { embedding = "fp32" }\n',
            "'runtime.precision.embedding': Input should be 'auto'",
        ),
        (
            '[runtime]\ninference_precision = "int8"\n',
            "'runtime.inference_precision': Input should be 'auto', 'f32'",
        ),
    ],
)
def test_precision_settings_are_validated_naming_the_key_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    code, out, err = run(capsys, "check-config", str(path))
    assert code == 78 and message in out + err


def test_auto_is_the_default_and_a_per_task_table_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[runtime]\nprecision = { detection = "f32", embedding = "auto" }\n')
    code, out, err = run(capsys, "check-config", str(path))
    assert code == 0, out + err
