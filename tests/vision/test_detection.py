"""YuNet input preparation, and decoding of hand-made outputs joined as the compiled detector joins them."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from facefleet.vision.detection import (
    STRIDES,
    DetectorInput,
    DetectorSettings,
    decode,
    input_size,
    iou,
    nms,
    prepare,
    voted_landmarks,
)


def raw_outputs(pad_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """All-zero (no face) outputs for a padded input of pad_hw."""
    outputs = {}
    for stride in STRIDES:
        cells = (pad_hw[0] // stride) * (pad_hw[1] // stride)
        outputs[f"cls_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"obj_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"bbox_{stride}"] = np.zeros((1, cells, 4), np.float32)
        outputs[f"kps_{stride}"] = np.zeros((1, cells, 10), np.float32)
    return outputs


def joined(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the detector compiled with JOINED_OUTPUTS hands over for these raw per-grid outputs."""
    return {
        "score": np.concatenate(
            [np.sqrt(np.clip(raw[f"cls_{s}"], 0, 1) * np.clip(raw[f"obj_{s}"], 0, 1)) for s in STRIDES],
            axis=1,
        ),
        "bbox": np.concatenate([raw[f"bbox_{s}"] for s in STRIDES], axis=1),
        "kps": np.concatenate([raw[f"kps_{s}"] for s in STRIDES], axis=1),
    }


def prepared_for(pad_hw: tuple[int, int], scale: float, frame_hw: tuple[int, int]) -> DetectorInput:
    return DetectorInput(tensor=np.zeros((1, *pad_hw, 3), np.uint8), scale=scale, frame_hw=frame_hw)


def put_face(
    outputs: dict[str, np.ndarray], stride: int, row: int, col: int, cols: int, score: float
) -> None:
    """One face in grid cell (row, col): centre offset 0.5, size 2 cells, landmarks spread over the cell."""
    index = row * cols + col
    outputs[f"cls_{stride}"][0, index, 0] = score
    outputs[f"obj_{stride}"][0, index, 0] = score
    outputs[f"bbox_{stride}"][0, index] = [0.5, 0.5, np.log(2.0), np.log(2.0)]
    outputs[f"kps_{stride}"][0, index] = [-0.5, -0.5, 1.5, -0.5, 0.5, 0.5, -0.25, 1.5, 1.25, 1.5]


def test_decode_places_box_and_landmarks_in_frame_pixels() -> None:
    outputs = raw_outputs((64, 96))
    put_face(outputs, stride=16, row=2, col=3, cols=96 // 16, score=0.9)
    # frame was 128×192 scaled by 0.5 into the 64×96 input
    detections = decode(joined(outputs), prepared_for((64, 96), 0.5, (128, 192)), DetectorSettings())
    assert len(detections) == 1
    face = detections[0]
    centre = np.array([(3 + 0.5) * 16, (2 + 0.5) * 16]) / 0.5
    half = 2 * 16 / 2 / 0.5
    np.testing.assert_allclose(face.box_xyxy, [*(centre - half), *(centre + half)], atol=1e-3)
    cell = np.array([3, 2])
    np.testing.assert_allclose(face.landmarks_xy[0], (cell + np.array([-0.5, -0.5])) * 16 / 0.5, atol=1e-3)
    np.testing.assert_allclose(face.landmarks_xy[4], (cell + np.array([1.25, 1.5])) * 16 / 0.5, atol=1e-3)
    assert face.score == pytest.approx(0.9, abs=1e-6)


def test_decode_applies_the_score_threshold() -> None:
    outputs = raw_outputs((32, 32))
    outputs["cls_8"][0, 5, 0] = 0.81
    outputs["obj_8"][0, 5, 0] = 0.25  # sqrt(0.81·0.25) = 0.45 < 0.6
    assert decode(joined(outputs), prepared_for((32, 32), 1.0, (32, 32)), DetectorSettings()) == []
    low = decode(
        joined(outputs), prepared_for((32, 32), 1.0, (32, 32)), DetectorSettings(score_threshold=0.4)
    )
    assert [round(d.score, 3) for d in low] == [0.45]
    (cell,) = low
    np.testing.assert_allclose(cell.landmarks_xy[0], [5 % 4 * 8, 5 // 4 * 8])  # stride 8, row 1, column 1


def test_decode_suppresses_overlapping_boxes_and_keeps_the_best() -> None:
    outputs = raw_outputs((64, 64))
    put_face(outputs, stride=8, row=3, col=3, cols=8, score=0.8)
    put_face(outputs, stride=8, row=3, col=4, cols=8, score=0.95)
    detections = decode(joined(outputs), prepared_for((64, 64), 1.0, (64, 64)), DetectorSettings())
    assert [round(d.score, 2) for d in detections] == [0.95]


def test_decode_takes_the_landmarks_of_overlapping_cells_weighted_by_score() -> None:
    """Two cells of one face (boxes of 4 cells, IoU 0.6) vote for its landmarks; a face elsewhere keeps its
    own; at landmark_vote_iou 1.0 each face has its best cell's landmarks alone."""
    outputs = raw_outputs((96, 96))
    put_face(outputs, stride=8, row=4, col=4, cols=12, score=0.9)
    put_face(outputs, stride=8, row=4, col=5, cols=12, score=0.7)
    put_face(outputs, stride=8, row=10, col=10, cols=12, score=0.8)
    for index in (4 * 12 + 4, 4 * 12 + 5):
        outputs["bbox_8"][0, index, 2:] = np.log(4.0)
    outputs["kps_8"][0, 4 * 12 + 5] += 0.25  # the weaker cell puts every landmark 2 px lower right
    prepared = prepared_for((96, 96), 1.0, (96, 96))
    best_cell = decode(joined(outputs), prepared, DetectorSettings(landmark_vote_iou=1.0))
    voted = decode(joined(outputs), prepared, DetectorSettings())
    assert [round(d.score, 2) for d in voted] == [0.9, 0.8] == [round(d.score, 2) for d in best_cell]
    weaker = best_cell[0].landmarks_xy + np.array([8, 0]) + 0.25 * 8  # its cell is one to the right
    expected = (0.9 * best_cell[0].landmarks_xy + 0.7 * weaker) / (0.9 + 0.7)
    np.testing.assert_allclose(voted[0].landmarks_xy, expected, atol=1e-4)
    assert np.abs(voted[0].landmarks_xy - best_cell[0].landmarks_xy).max() > 0.5
    np.testing.assert_allclose(voted[1].landmarks_xy, best_cell[1].landmarks_xy, atol=1e-4)
    np.testing.assert_array_equal(voted[0].box_xyxy, best_cell[0].box_xyxy)


def test_two_faces_that_overlap_do_not_vote_for_each_other() -> None:
    """Kept apart by a lenient NMS threshold (boxes of 4 cells one cell apart, IoU 0.6), each keeps its own
    landmarks; a cell between two faces votes for the one it overlaps most, not for both."""
    outputs = raw_outputs((96, 96))
    put_face(outputs, stride=8, row=4, col=4, cols=12, score=0.9)
    put_face(outputs, stride=8, row=4, col=5, cols=12, score=0.8)
    for index in (4 * 12 + 4, 4 * 12 + 5):
        outputs["bbox_8"][0, index, 2:] = np.log(4.0)
    prepared = prepared_for((96, 96), 1.0, (96, 96))
    lenient = DetectorSettings(nms_threshold=0.7)
    alone = decode(joined(outputs), prepared, replace(lenient, landmark_vote_iou=1.0))
    voted = decode(joined(outputs), prepared, lenient)
    assert len(voted) == len(alone) == 2
    for mine, own in zip(voted, alone, strict=True):
        np.testing.assert_allclose(mine.landmarks_xy, own.landmarks_xy, atol=1e-4)

    boxes = np.array([[0, 0, 10, 10], [5.4, 0, 15.4, 10], [2.7, 0, 12.7, 10]], np.float32)
    landmarks = np.stack([np.full((5, 2), v, np.float32) for v in (0.0, 10.0, 4.0)])
    scores = np.array([0.9, 0.9, 0.8], np.float32)
    first, second = voted_landmarks(boxes, scores, landmarks, [0, 1], 0.5)
    assert iou(boxes[2:], boxes[:2]).min() >= 0.5  # the middle cell overlaps both faces enough
    np.testing.assert_allclose(first, (0.9 * 0 + 0.8 * 4) / 1.7, atol=1e-5)  # ties go to the first face
    np.testing.assert_allclose(second, 10.0)


def test_a_face_without_weight_keeps_its_own_landmarks() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32)
    landmarks = np.stack([np.full((5, 2), v, np.float32) for v in (3.0, 7.0)])
    voted = voted_landmarks(boxes, np.zeros(2, np.float32), landmarks, [0], 0.5)
    np.testing.assert_array_equal(voted[0], landmarks[0])


@pytest.mark.parametrize("vote_iou", [0.0, -0.5, 1.5])
def test_a_landmark_vote_iou_outside_0_to_1_is_refused(vote_iou: float) -> None:
    with pytest.raises(ValueError, match=r"landmark_vote_iou must be in \(0, 1\]"):
        DetectorSettings(landmark_vote_iou=vote_iou)


def test_iou_of_every_pair_of_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    np.testing.assert_allclose(
        iou(boxes[:2], boxes), [[1.0, 50 / 150, 0.0, 1.0], [50 / 150, 1.0, 0.0, 50 / 150]], atol=1e-6
    )


def test_decode_clips_boxes_to_the_frame() -> None:
    outputs = raw_outputs((32, 32))
    put_face(outputs, stride=32, row=0, col=0, cols=1, score=0.99)
    (face,) = decode(joined(outputs), prepared_for((32, 32), 1.0, (20, 30)), DetectorSettings())
    assert face.box_xyxy.min() >= 0 and face.box_xyxy[2] <= 30 and face.box_xyxy[3] <= 20


def test_decode_names_a_missing_output() -> None:
    outputs = raw_outputs((32, 32))
    outputs["cls_16"][0, 0, 0] = outputs["obj_16"][0, 0, 0] = 1.0
    incomplete = joined(outputs)
    del incomplete["kps"]
    with pytest.raises(KeyError, match="'kps' is missing"):
        decode(incomplete, prepared_for((32, 32), 1.0, (32, 32)), DetectorSettings())


def test_decode_finds_faces_on_every_grid_of_a_frame_size() -> None:
    """Cells of the stride-16 and stride-32 grids land where they are, after stride 8's in the joined rows."""
    outputs = raw_outputs((128, 96))
    put_face(outputs, stride=16, row=6, col=1, cols=96 // 16, score=0.9)
    put_face(outputs, stride=32, row=1, col=1, cols=96 // 32, score=0.8)
    found = decode(joined(outputs), prepared_for((128, 96), 1.0, (128, 96)), DetectorSettings())
    centres = [((d.box_xyxy[:2] + d.box_xyxy[2:]) / 2).tolist() for d in found]
    assert centres == [[(1 + 0.5) * 16, (6 + 0.5) * 16], [(1 + 0.5) * 32, (1 + 0.5) * 32]]


@pytest.mark.parametrize(
    ("frame_hw", "long_side", "upscale", "expected_scale", "expected_pad"),
    [
        ((480, 640), 640, False, 1.0, (480, 640)),
        ((886, 1280), 640, False, 0.5, (448, 640)),
        ((1, 1), 640, False, 1.0, (32, 32)),
        ((1, 1), 640, True, 640.0, (640, 640)),
        ((512, 512), 640, False, 1.0, (512, 512)),
        ((512, 512), 640, True, 1.25, (640, 640)),
        ((20000, 20000), 320, False, 0.016, (320, 320)),
        ((100, 3000), 640, False, 640 / 3000, (32, 640)),
    ],
)
def test_input_size_keeps_aspect_and_pads_to_32(
    frame_hw: tuple[int, int],
    long_side: int,
    upscale: bool,
    expected_scale: float,
    expected_pad: tuple[int, int],
) -> None:
    scale, pad = input_size(frame_hw, long_side, upscale)
    assert scale == pytest.approx(expected_scale)
    assert pad == expected_pad


def test_input_size_rejects_an_empty_frame() -> None:
    with pytest.raises(ValueError, match="at least 1×1"):
        input_size((0, 10), 640)


def test_prepare_makes_an_nhwc_bgr_uint8_image_padded_bottom_right() -> None:
    frame = np.zeros((90, 200, 3), np.uint8)
    frame[..., 0] = 10  # blue
    frame[..., 2] = 200  # red
    prepared = prepare(frame, DetectorSettings(long_side=64))
    assert prepared.scale == pytest.approx(64 / 200)
    assert prepared.tensor.shape == (1, 32, 64, 3) and prepared.tensor.dtype == np.uint8
    assert prepared.padded_hw == (32, 64)
    assert prepared.tensor[0, 0, 0].tolist() == [10, 0, 200]
    assert np.all(prepared.tensor[0, :29, :, 2] == 200)  # 90 px × 0.32 = 29 rows of the frame
    assert np.all(prepared.tensor[0, 29:] == 0)  # then padding


@pytest.mark.parametrize(
    ("frame_hw", "long_side", "upscale"),
    [((100, 90), 64, False), ((70, 45), 640, False), ((37, 300), 256, False), ((70, 45), 100, True)],
)
def test_prepare_places_the_scaled_frame_and_pads_both_sides_with_zeros(
    frame_hw: tuple[int, int], long_side: int, upscale: bool
) -> None:
    frame = np.random.default_rng(3).integers(1, 256, (*frame_hw, 3), dtype=np.uint8)
    prepared = prepare(frame, DetectorSettings(long_side=long_side, upscale=upscale))
    height, width = (max(1, round(side * prepared.scale)) for side in frame_hw)
    expected = frame
    if prepared.scale != 1:
        interpolation = cv2.INTER_AREA if prepared.scale < 1 else cv2.INTER_LINEAR
        expected = cv2.resize(frame, (width, height), interpolation=interpolation)
    np.testing.assert_array_equal(prepared.tensor[0, :height, :width], expected)
    assert not prepared.tensor[0, height:].any() and not prepared.tensor[0, :, width:].any()
    assert prepared.tensor[0, :height, :width].all()


@pytest.mark.parametrize(
    ("boxes", "scores", "expected"),
    [
        (np.empty((0, 4), np.float32), np.empty((0,), np.float32), []),
        (np.array([[0, 0, 10, 10]], np.float32), np.array([0.5], np.float32), [0]),
        (
            np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32),
            np.array([0.6, 0.9, 0.7], np.float32),
            [1, 2],
        ),
        (np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.array([0.6, 0.9], np.float32), [1, 0]),
    ],
)
def test_nms(boxes: np.ndarray, scores: np.ndarray, expected: list[int]) -> None:
    assert nms(boxes, scores, 0.3) == expected
