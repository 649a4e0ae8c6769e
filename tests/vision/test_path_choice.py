"""Choosing the frame path: fixed by the mode, or measured on the frames seen (a fake clock)."""

from __future__ import annotations

import pytest

from facefleet.vision.path_choice import FramePath, PathChooser


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(chooser: PathChooser, clock: Clock, ms: dict[FramePath, float], frames: int) -> list[FramePath]:
    """Frames completed one by one, each taking ms[path]; the path asked before each."""
    paths = []
    for _ in range(frames):
        path = chooser.path
        paths.append(path)
        clock.now += ms[path] / 1000
        chooser.completed(path)
    return paths


@pytest.mark.parametrize(("mode", "path"), [("on", "pipelined"), ("off", "sequential")])
def test_a_fixed_mode_never_measures(mode: str, path: FramePath) -> None:
    clock = Clock()
    chooser = PathChooser(mode, window=3, clock=clock)  # type: ignore[arg-type]
    assert set(run(chooser, clock, {"sequential": 10, "pipelined": 50}, 40)) == {path}
    chooser.restart()
    assert chooser.path == path and not chooser.measuring
    assert chooser.status() == {"mode": mode, "path": path, "measuring": False, "fps": {}}


def test_auto_warms_up_then_alternates_windows_and_takes_the_faster_path() -> None:
    clock = Clock()
    chooser = PathChooser("auto", window=3, rounds=2, clock=clock)
    paths = run(chooser, clock, {"sequential": 40, "pipelined": 25}, 15)
    assert paths == ["sequential"] * 3 + (["sequential"] * 3 + ["pipelined"] * 3) * 2
    assert chooser.status() == {
        "mode": "auto",
        "path": "pipelined",
        "measuring": False,
        "fps": {"sequential": 25.0, "pipelined": 40.0},
    }
    assert set(run(chooser, clock, {"sequential": 40, "pipelined": 25}, 20)) == {"pipelined"}


@pytest.mark.parametrize("pipelined_ms", [40.0, 39.0, 60.0])
def test_auto_falls_back_to_sequential_unless_pipelining_pays_its_margin(pipelined_ms: float) -> None:
    clock = Clock()
    chooser = PathChooser("auto", window=4, margin=1.05, clock=clock)
    run(chooser, clock, {"sequential": 40, "pipelined": pipelined_ms}, 40)
    assert not chooser.measuring and chooser.path == "sequential"


def test_one_window_slowed_by_a_camera_stall_does_not_decide() -> None:
    """Pipelined 25 frames/s against sequential 20, three windows each; a 10 s stall (a camera
    reconnecting) in one pipelined window would bring a sum over the windows to 6.6 frames/s."""
    clock = Clock()
    chooser = PathChooser("auto", window=10, rounds=3, clock=clock)
    ms: dict[FramePath, float] = {"sequential": 50, "pipelined": 40}
    run(chooser, clock, ms, 10 + 10)  # warm-up, first sequential window
    run(chooser, clock, ms, 5)
    clock.now += 10.0  # the stall, within the first pipelined window
    run(chooser, clock, ms, 5 + 40)
    assert not chooser.measuring and chooser.path == "pipelined"
    assert chooser.fps == {"sequential": 20.0, "pipelined": 25.0}


def test_frames_drained_from_the_other_path_do_not_count_towards_a_window() -> None:
    clock = Clock()
    chooser = PathChooser("auto", window=2, rounds=1, clock=clock)
    run(chooser, clock, {"sequential": 10, "pipelined": 10}, 2)  # warm-up
    assert chooser.path == "sequential"
    chooser.completed("pipelined", 5)  # leftovers of another window: ignored
    assert chooser.path == "sequential" and chooser.measuring
    run(chooser, clock, {"sequential": 10, "pipelined": 10}, 2)
    assert chooser.path == "pipelined"


def test_auto_measures_again_after_a_restart_and_after_its_interval() -> None:
    clock = Clock()
    chooser = PathChooser("auto", window=2, rounds=1, remeasure_s=60, clock=clock)
    run(chooser, clock, {"sequential": 50, "pipelined": 20}, 6)
    assert chooser.path == "pipelined" and not chooser.measuring
    chooser.restart()  # e.g. another model
    assert chooser.measuring and chooser.path == "sequential"
    run(chooser, clock, {"sequential": 20, "pipelined": 50}, 6)
    assert chooser.path == "sequential" and chooser.fps == {"sequential": 50.0, "pipelined": 20.0}
    clock.now += 61
    assert chooser.path == "sequential" and chooser.measuring
