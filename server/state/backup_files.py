"""The files of a backup that both state backends share: the model store copied with a sha256 per file, and
files restored whole or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

from facefleet.core.files import replace_atomic
from facefleet.vision.models.manifest import sha256_file

__all__ = ["copy_atomically", "copy_models", "sha256_file"]


def copy_models(models: Path, dest: Path) -> dict[str, str]:
    """Copy every file under `models` to `dest`; sha256 of each copy by its path under models/."""
    sums: dict[str, str] = {}
    if not models.is_dir():
        return sums
    for path in sorted(p for p in models.rglob("*") if p.is_file()):
        name = path.relative_to(models).as_posix()
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        sums[name] = sha256_file(target)
    return sums


def copy_atomically(source: Path, target: Path) -> None:
    """Copy `source` over `target` all at once, private to the user (core.files.replace_atomic)."""
    with source.open("rb") as inp:
        replace_atomic(target, lambda out: shutil.copyfileobj(inp, out, 1 << 20), mode=0o600)
