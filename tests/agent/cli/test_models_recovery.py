"""A model store that `run` would stop on: `models verify` fails the same way (exit 74, `run`'s message),
and a model file that no longer matches its manifest is named with the fix: the version to activate
instead, or the folder to remove so that the updater fetches it again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facefleet.agent.cli.main import main
from facefleet.vision.errors import ModelIntegrityError
from facefleet.vision.models.manifest import MANIFEST_NAME
from facefleet.vision.models.store import ModelStore, check_model

AGENT = str(Path(sys.executable).with_name("facefleet-agent"))


def run_verb(capsys: pytest.CaptureFixture[str], state: Path, *argv: str) -> tuple[int, str]:
    code = main(["--state-dir", str(state), *argv])
    return code, capsys.readouterr().err


def run_service(state: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[mqtt]\nenabled = false\n[metrics]\nlisten = ""\n'
        f'[[cameras]]\nname = "door"\nsource = "{tmp_path / "door.avi"}"\n'
    )
    return subprocess.run(
        [AGENT, "--config", str(config), "--state-dir", str(state), "run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_line(stderr: str) -> str:
    return next(line for line in reversed(stderr.splitlines()) if line.startswith("facefleet-agent: error:"))


@pytest.mark.parametrize("active_json", [None, b"", b"{not json"])
def test_models_verify_fails_as_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], active_json: bytes | None
) -> None:
    """No model store at all (a state directory where no model was imported), and an unreadable
    active.json (a power cut while an older agent wrote it)."""
    state = tmp_path / "state"
    state.mkdir()
    if active_json is not None:
        (state / "models").mkdir()
        (state / "models" / "active.json").write_bytes(active_json)
    code, err = run_verb(capsys, state, "models", "verify")
    assert code == 74, err
    if active_json is None:
        assert (
            f"no active detection model in {state / 'models'}; run `facefleet-agent models import-defaults`"
        ) in err
    else:
        assert f"{state / 'models' / 'active.json'}: unreadable (" in err
        assert "re-run `facefleet-agent models activate`" in err
    service = run_service(state, tmp_path)
    assert service.returncode == 74, service.stderr
    assert error_line(service.stderr) == error_line(err)


def copy_models(model_store: ModelStore, state: Path) -> ModelStore:
    shutil.copytree(model_store.root, state / "models", ignore=shutil.ignore_patterns(".*"))
    return ModelStore(state / "models")


def older_version(store: ModelStore, task: str, name: str, version: str, older: str) -> Path:
    """A copy of a stored version under another version name, stored before it."""
    source = store.root / task / name / version
    target = store.root / task / name / older
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    (target / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": older}))
    past = source.stat().st_mtime_ns - 3_600 * 10**9
    os.utime(target, ns=(past, past))
    return target


def test_a_corrupt_model_file_names_the_version_to_activate_and_the_folder_to_remove(
    model_store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    store = copy_models(model_store, state)
    older_version(store, "embedding", "sface", "2021dec", "2020jan")
    model = store.active("embedding")
    (model.directory / "model.bin").write_bytes(b"cut short")
    with pytest.raises(ModelIntegrityError) as info:
        check_model(model)
    assert str(info.value) == (
        f"{model.directory / 'model.bin'}: sha256 differs from the manifest (file changed or corrupt); fix: "
        "`facefleet-agent models activate embedding sface 2020jan` to run sface@2020jan instead, then remove "
        f"{model.directory} so that the updater fetches it again (while the fleet server rolls it out), or "
        "import it again (`facefleet-agent models import-defaults` for the bundled models)"
    )
    assert main(["--state-dir", str(state), "models", "verify", "--json"]) == 74
    failed = [m for m in json.loads(capsys.readouterr().out)["models"] if not m["ok"]]
    assert [m["model"] for m in failed] == ["embedding/sface/2021dec"]
    assert failed[0]["fix"].startswith("fix: `facefleet-agent models activate embedding sface 2020jan`")
    service = run_service(state, tmp_path)  # as `run` stops on it at start
    assert service.returncode == 74, service.stderr
    assert "`facefleet-agent models activate embedding sface 2020jan`" in error_line(service.stderr)


def test_with_no_other_version_the_fix_is_to_fetch_or_import_it_again(
    model_store: ModelStore, tmp_path: Path
) -> None:
    store = copy_models(model_store, tmp_path / "state")
    model = store.active("embedding")  # its INT8 variant is stored beside it: not a version to activate
    (model.directory / "model.bin").write_bytes(b"cut short")
    with pytest.raises(ModelIntegrityError) as info:
        check_model(model)
    message = str(info.value)
    assert f"fix: remove {model.directory} so that the updater fetches it again" in message
    assert message.endswith("until then no other embedding model is stored here to run instead")
    assert "models activate" not in message
