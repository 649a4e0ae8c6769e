"""Video files for tests and benchmarks: frames written as an MJPG .avi that OpenCV's reader (the agent's
camera source) plays back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


def write_video(path: Path, frames: list[npt.NDArray[np.uint8]], fps: float) -> Path:
    """frames as an MJPG .avi at fps (all resized to the first frame's size); path."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG video to {path}")
    for frame in frames:
        writer.write(cv2.resize(frame, (width, height)))
    writer.release()
    return path
