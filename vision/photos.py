"""Real sample photos that ship inside installed wheels (never committed): for the demo, tests and benchmarks.

`python -m facefleet.vision.photos` prints their paths, one per line.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from facefleet.vision.errors import ImageError

SAMPLE_PHOTOS = {
    "astronaut": ("scikit-image", "skimage/data/astronaut.png"),
    "t1": ("insightface", "insightface/data/images/t1.jpg"),
}
"""name → (package, path in the package): astronaut has one smiling face, t1 six people."""

CARRIER_INSTALL_COMMANDS = {
    "scikit-image": "pip install 'facefleet[models]'",
    "insightface": "pip install --no-deps insightface==2.1",
}
"""package → the command that installs it: insightface declares onnxruntime, so it is not in the extra."""


def sample_photo(name: str) -> Path:
    """Path of a bundled sample photo, or an ImageError saying what to install."""
    package, relative = SAMPLE_PHOTOS[name]
    what = f"sample photo '{name}' comes from the {package} wheel"
    try:
        distribution = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise ImageError(f"{what}, which is not installed: {CARRIER_INSTALL_COMMANDS[package]}") from None
    path = Path(str(distribution.locate_file(relative)))
    if not path.is_file():
        raise ImageError(
            f"{what}, but the installed {package} {distribution.version} has no {relative}: "
            f"{CARRIER_INSTALL_COMMANDS[package]}"
        )
    return path


if __name__ == "__main__":
    for photo in SAMPLE_PHOTOS:
        print(sample_photo(photo))
