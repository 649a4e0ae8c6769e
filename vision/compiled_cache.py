"""OpenVINO's compiled-model cache, one folder per model content and OpenVINO version, so that what a model
removed from the store (or an older OpenVINO) left there can go too. OpenVINO names its blobs by a hash
that says neither.

<cache_dir>/compiled/<key>/: the blobs OpenVINO wrote for one model; key: the first 16 hex digits of the
sha256 of the OpenVINO version and the model's files (IR .xml and .bin). Its SOURCE file holds the
OpenVINO version, then every path that model was compiled from, a line each: the folder is kept while one
of them is a file. A folder appears whole (written aside, then renamed), so a sweep by another process
never sees one without its SOURCE.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
COMPILED = "compiled"
SOURCE = "SOURCE"
ABANDONED_AFTER_S = 3600
"""A folder still being written aside after this long was left by a process that died (s)."""


def folder_for(cache_dir: Path, model_file: Path, openvino: str) -> Path:
    """The folder OpenVINO keeps the compiled blobs of model_file (and its .bin) in, made if missing, with
    model_file's path among its SOURCE's."""
    source = str(model_file.resolve())
    content = hashlib.sha256(openvino.encode())
    for part in (model_file, model_file.with_suffix(".bin")):
        with contextlib.suppress(FileNotFoundError):
            stat = part.stat()
            content.update(_digest(str(part.resolve()), stat.st_size, stat.st_mtime_ns))
    folder = cache_dir / COMPILED / content.hexdigest()[:16]
    for _ in range(3):  # a sweep by another process may remove it meanwhile
        _list(folder, openvino, source)
        if _still_used(folder, openvino):
            break
    return folder


def _list(folder: Path, openvino: str, source: str) -> None:
    """Make folder (whole) if missing, and source one of the paths its SOURCE lists."""
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=".new-", dir=folder.parent))
        (aside / SOURCE).write_text(f"{openvino}\n{source}\n")
        try:
            aside.rename(folder)
            return
        except OSError:  # another process made it first
            shutil.rmtree(aside, ignore_errors=True)
    with contextlib.suppress(OSError):
        try:
            _, *sources = (folder / SOURCE).read_text().splitlines()
        except (FileNotFoundError, ValueError):  # blobs OpenVINO wrote into a folder swept meanwhile
            handle, written = tempfile.mkstemp(prefix=".source-", dir=folder)  # fails if swept again
            with os.fdopen(handle, "w") as file:
                file.write(f"{openvino}\n{source}\n")
            os.replace(written, folder / SOURCE)
            return
        if source not in sources:
            with open(folder / SOURCE, "a") as listed:  # one short append: whole, whoever else appends
                listed.write(f"{source}\n")


def sweep(cache_dir: Path, openvino: str) -> list[Path]:
    """Remove the folders of models none of whose paths is a file any more or of another OpenVINO version,
    and the blobs OpenVINO wrote straight into cache_dir before folders were kept per model; the paths
    removed."""
    removed: list[Path] = []
    for blob in cache_dir.glob("*.blob"):
        try:
            blob.unlink()
            removed.append(blob)
        except OSError as exc:  # gone meanwhile, or not ours to remove: the models run all the same
            log.debug("compiled-model cache: %s not removed: %s", blob, exc)
    compiled = cache_dir / COMPILED
    if compiled.is_dir():
        for folder in compiled.iterdir():
            if folder.is_dir() and not (_being_written(folder) or _still_used(folder, openvino)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed:
        log.info(
            "compiled-model cache: removed %d entries of models no longer stored or of another OpenVINO",
            len(removed),
        )
    return removed


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file's bytes; size and mtime_ns make a changed file another key."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def _still_used(folder: Path, openvino: str) -> bool:
    try:
        version, *sources = (folder / SOURCE).read_text().splitlines()
    except (OSError, ValueError):
        return False  # not a folder of ours, or a broken one
    return version == openvino and any(os.path.isfile(source) for source in sources)


def _being_written(folder: Path) -> bool:
    """A folder set aside by folder_for that is not renamed yet (nor abandoned)."""
    if not folder.name.startswith(".new-"):
        return False
    with contextlib.suppress(FileNotFoundError):
        return time.time() - folder.stat().st_mtime < ABANDONED_AFTER_S
    return True
