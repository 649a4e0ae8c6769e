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


def sample_photo(name: str) -> Path:
    """Path of a bundled sample photo, or an ImageError saying which package to install."""
    package, relative = SAMPLE_PHOTOS[name]
    try:
        path = Path(str(metadata.distribution(package).locate_file(relative)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ImageError(
            f"sample photo '{name}' comes with package '{package}'; run scripts/setup to install it"
        )
    return path


if __name__ == "__main__":
    for photo in SAMPLE_PHOTOS:
        print(sample_photo(photo))
