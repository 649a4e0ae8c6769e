"""A state directory that cannot be created ends every command that writes it with exit 74 and a message
naming the directory and the fix, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from facefleet.core.errors import EXIT_IO
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime, RuntimeSettings

BIN = Path(sys.executable).parent
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A state directory that cannot be made: its parent is a file (EACCES needs a user other than root)."""
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "state"


def test_the_runtime_names_the_cache_it_cannot_create(blocked: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"compiled-model cache .*cannot create .*model_cache = false"):
        Runtime(RuntimeSettings(cache_dir=blocked / "cache"))


def test_the_model_store_names_the_folder_it_cannot_create(blocked: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"model store .*: cannot create .*writable"):
        ModelStore(blocked / "models").staging_dir()


@pytest.mark.parametrize(
    ("program", "config", "command"),
    [
        ("facefleet-agent", 'device_id = "door-1"\n[mqtt]\nenabled = false\n', ["run"]),
        ("facefleet-agent", "", ["models", "import-defaults"]),
        ("facefleet-agent", "[runtime]\nmodel_cache = false\n", ["models", "import-defaults"]),
        ("facefleet-server", "", ["models", "import-defaults"]),
    ],
)
def test_commands_exit_74_naming_the_state_directory(
    blocked: Path, tmp_path: Path, program: str, config: str, command: list[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config)
    result = subprocess.run(
        [str(BIN / program), "--config", str(path), "--state-dir", str(blocked), *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == EXIT_IO, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{program}: error: " in result.stderr and str(blocked) in result.stderr


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="facefleet-rw-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)
@pytest.mark.parametrize(
    ("program", "config", "command", "key"),
    [
        ("facefleet-agent", 'device_id = "door-1"\n[mqtt]\nenabled = false\n', "run", "state_dir"),
        ("facefleet-server", "", "serve", "state_dir"),
        ("facefleet-server", '[models]\ndir = "{readonly}/models"\n', "serve", "models.dir"),
    ],
)
def test_run_and_serve_refuse_a_directory_they_cannot_write_at_start(
    shared: Path, program: str, config: str, command: str, key: str
) -> None:
    """As under ProtectSystem=strict without ReadWritePaths=: the folder exists but is read-only."""
    readonly = shared / "readonly"
    (readonly / "models").mkdir(parents=True)
    readonly.chmod(0o555)
    (readonly / "models").chmod(0o555)
    state = readonly if key == "state_dir" else shared / "state"
    if key != "state_dir":
        state.mkdir()
        os.chown(state, 65534, 65534)
    path = shared / "config.toml"
    path.write_text(config.format(readonly=readonly))
    result = subprocess.run(
        [*AS_NOBODY, str(BIN / program), "--config", str(path), "--state-dir", str(state), command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(shared)},
    )
    assert result.returncode == EXIT_IO, result.stderr
    expected = readonly if key == "state_dir" else readonly / "models"
    assert f"{program}: error: {key} {expected}: not writable" in result.stderr
    assert f"ReadWritePaths={expected}" in result.stderr and "Traceback" not in result.stderr
