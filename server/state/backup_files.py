"""The files of a backup that both state backends share: the model store copied with a sha256 per file, and
files restored whole or not at all."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from facefleet.core.files import replace_atomic
from facefleet.server.state.backup_manifest import MANIFEST, MODELS
from facefleet.vision.models.manifest import sha256_file

__all__ = ["copy_atomically", "copy_models", "remove_partial", "sha256_file"]


def copy_models(models: Path, dest: Path) -> dict[str, str]:
    """Copy the model store's files under `models` to `dest`; sha256 of each copy by its path under models/.
    Paths with a part that starts with "." are left out: a model being imported or published (.staging),
    removed (.removing-*) or downloaded (.downloads), a file being replaced. So is a file that went away
    between the listing and its copy (its model was removed meanwhile)."""
    sums: dict[str, str] = {}
    names: list[str] = []
    for folder, subfolders, files in os.walk(models):  # a folder that goes away meanwhile is skipped
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        under = Path(folder).relative_to(models)
        names += [(under / name).as_posix() for name in files if not name.startswith(".")]
    for name in sorted(names):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(models / name, target)
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            continue
        sums[name] = sha256_file(target)
    return sums


def remove_partial(dest: Path, created: bool, files: Sequence[str]) -> None:
    """Remove what a failed backup wrote into `dest`, which was new or empty, so that a retry into it
    works: `dest` itself when the backup created it, else `files`, the manifest and models/."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for name in (*files, MANIFEST):
        (dest / name).unlink(missing_ok=True)
    shutil.rmtree(dest / MODELS, ignore_errors=True)


def copy_atomically(source: Path, target: Path) -> None:
    """Copy `source` over `target` all at once, private to the user (core.files.replace_atomic)."""
    with source.open("rb") as inp:
        replace_atomic(target, lambda out: shutil.copyfileobj(inp, out, 1 << 20), mode=0o600)
