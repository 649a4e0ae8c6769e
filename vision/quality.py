"""Face quality from size, sharpness and pose, so poor faces are not used to decide who someone is."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.vision.faces import Detection, Quality


@dataclass(frozen=True)
class QualityPolicy:
    """Minimums a face must meet to be embedded or enrolled.

    min_face_px: shorter box side (frame px); min_sharpness: Laplacian variance of the aligned grey crop;
    max_yaw, max_pitch: landmark asymmetry in [0, 1]; min_score: overall quality in [0, 1].
    """

    min_face_px: float = 40.0
    min_sharpness: float = 15.0
    max_yaw: float = 0.6
    max_pitch: float = 0.6
    min_score: float = 0.3

    def rejections(self, quality: Quality) -> list[str]:
        """Why a face falls short of this policy; empty when it is good enough."""
        reasons = []
        if quality.face_px < self.min_face_px:
            reasons.append(f"face too small ({quality.face_px:.0f} px < {self.min_face_px:.0f} px)")
        if quality.sharpness < self.min_sharpness:
            reasons.append(f"face too blurred (sharpness {quality.sharpness:.1f} < {self.min_sharpness:.1f})")
        if abs(quality.yaw) > self.max_yaw:
            reasons.append(f"face turned sideways (yaw {quality.yaw:+.2f}, limit ±{self.max_yaw:.2f})")
        if abs(quality.pitch) > self.max_pitch:
            reasons.append(
                f"face tilted up or down (pitch {quality.pitch:+.2f}, limit ±{self.max_pitch:.2f})"
            )
        if quality.score < self.min_score:
            reasons.append(f"overall quality {quality.score:.2f} < {self.min_score:.2f}")
        return reasons


def pose_from_landmarks(landmarks_xy: npt.NDArray[np.float32]) -> tuple[float, float, float]:
    """(yaw, pitch, roll_deg) estimated from the 5 landmarks, (5, 2) in LANDMARK_NAMES order.

    yaw: where the nose sits between the eyes, -1..1 (0 centred); pitch: where the nose sits between the
    eye line and the mouth line, rescaled so 0 is the frontal position and ±1 the lines themselves.
    """
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = np.asarray(
        landmarks_xy, dtype=np.float64
    ).tolist()[:5]
    eye_x, eye_y = lex - rex, ley - rey
    eye_dist = math.hypot(eye_x, eye_y)
    if eye_dist < 1e-6:
        return 1.0, 1.0, 0.0
    roll = math.degrees(math.atan2(eye_y, eye_x))
    axis_x, axis_y = eye_x / eye_dist, eye_y / eye_dist
    normal_x, normal_y = -axis_y, axis_x
    nose_along = ((nx - rex) * axis_x + (ny - rey) * axis_y) / eye_dist
    yaw = min(1.0, max(-1.0, 2.0 * nose_along - 1.0))
    mid_x, mid_y = (rex + lex) / 2, (rey + ley) / 2
    mouth_depth = ((rmx + lmx) / 2 - mid_x) * normal_x + ((rmy + lmy) / 2 - mid_y) * normal_y
    if mouth_depth < 1e-6:
        return yaw, 1.0, roll
    nose_depth = ((nx - mid_x) * normal_x + (ny - mid_y) * normal_y) / mouth_depth
    frontal_nose_depth = 0.5
    pitch = min(1.0, max(-1.0, (nose_depth - frontal_nose_depth) / frontal_nose_depth))
    return yaw, pitch, roll


def sharpness(aligned_bgr: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the (112, 112, 3) aligned crop in grey: low means blurred."""
    grey = cv2.cvtColor(aligned_bgr, cv2.COLOR_BGR2GRAY)
    # The Laplacian of uint8 pixels is a small integer, exact in float32; the variance is summed in double.
    _, deviation = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return float(deviation[0, 0]) ** 2


def assess(detection: Detection, aligned_bgr: npt.NDArray[np.uint8]) -> Quality:
    """Quality of one detected face from its box, landmarks and aligned crop."""
    face_px = float(min(detection.size_wh))
    yaw, pitch, roll = pose_from_landmarks(detection.landmarks_xy)
    sharp = sharpness(aligned_bgr)
    size_term = min(1.0, face_px / 80.0)
    sharp_term = min(1.0, sharp / 100.0)
    pose_term = max(0.0, 1.0 - max(abs(yaw), abs(pitch)))
    score = float(detection.score) * (size_term * sharp_term * pose_term) ** (1 / 3)
    return Quality(face_px=face_px, sharpness=sharp, yaw=yaw, pitch=pitch, roll_deg=roll, score=score)
