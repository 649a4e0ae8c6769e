"""Which way a frame loop analyses its frames: one at a time (`FaceAnalyzer.analyze`), or pipelined
(`FramePipeline`, inference in flight while Python works), chosen by measuring both on the frames seen."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger(__name__)

FramePath = Literal["sequential", "pipelined"]
PathMode = Literal["auto", "on", "off"]
PATHS: tuple[FramePath, FramePath] = ("sequential", "pipelined")


class PathChooser:
    """The path a frame loop runs. mode "on": pipelined, "off": sequential; "auto": after `window` frames
    of warm-up (compilations, first-frame costs), alternating windows of `window` frames on each path,
    `rounds` times each, then the pipelined path when its frames/s (the median over its windows, each
    window's frames completed over its wall time) is at least `margin` × the sequential path's, else
    sequential (its latency is lower). Short alternating windows sample both paths across the same scenes
    (faces come and go); the median keeps one window that a camera stall (a reconnect) slowed from deciding.
    A camera slower than both paths makes them equal, so sequential. Auto measures again every
    `remeasure_s` seconds and after restart() (e.g. a model switch).

    The loop asks `path` before each frame and calls completed(path, n) for each n frames completed on a
    path; frames completed on another path than the window's (draining after a change) are not counted."""

    def __init__(
        self,
        mode: PathMode,
        window: int = 30,
        rounds: int = 3,
        margin: float = 1.05,
        remeasure_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.window = max(1, window)
        self.rounds = max(1, rounds)
        self.margin = margin
        self.remeasure_s = remeasure_s
        self.clock = clock
        self.fps: dict[FramePath, float] = {}
        """frames/s per path of the last measurement (auto only)."""
        self._chosen: FramePath = "pipelined" if mode == "on" else "sequential"
        self._plan: list[FramePath | None] = []
        """The windows still to run: None = warm-up (not measured), then the paths to measure."""
        self._counted = 0
        self._started = 0.0
        self._windows: dict[FramePath, list[float]] = {}
        """frames/s of each measured window, per path."""
        self._decided_at = 0.0
        self.restart()

    @property
    def measuring(self) -> bool:
        return bool(self._plan)

    @property
    def path(self) -> FramePath:
        """The path for the next frame."""
        if self.mode == "auto" and not self._plan and self.clock() - self._decided_at >= self.remeasure_s:
            self.restart()
        return self._current()

    def _current(self) -> FramePath:
        head = self._plan[:1]  # one read: status() may run on another thread
        if head:
            return head[0] or "sequential"
        return self._chosen

    def restart(self) -> None:
        """Measure again from the next frame (auto only)."""
        if self.mode != "auto":
            return
        self._plan = [None, *(path for _ in range(self.rounds) for path in PATHS)]
        self._windows = {path: [] for path in PATHS}
        self._counted = 0
        self._started = self.clock()

    def completed(self, path: FramePath, frames: int = 1) -> None:
        """`frames` frames completed on `path`."""
        if not self._plan or frames <= 0 or path != self._current():
            return
        self._counted += frames
        if self._counted < self.window:
            return
        now = self.clock()
        window = self._plan.pop(0)
        if window is not None:
            elapsed = now - self._started
            self._windows[window].append(self._counted / elapsed if elapsed > 0 else 0.0)
        self._counted = 0
        self._started = now
        if not self._plan:
            self._decide(now)

    def _decide(self, now: float) -> None:
        self.fps = {path: round(statistics.median(fps), 1) for path, fps in self._windows.items()}
        faster = self.fps["pipelined"] >= self.margin * self.fps["sequential"]
        self._chosen = "pipelined" if faster else "sequential"
        self._decided_at = now
        log.info(
            "frame path: %s (pipelined %.1f frames/s, sequential %.1f)",
            self._chosen,
            self.fps["pipelined"],
            self.fps["sequential"],
        )

    def status(self) -> dict[str, Any]:
        """mode, the path in use, whether it is being measured, and the measured frames/s per path (read
        from any thread: changes nothing)."""
        path, measuring = self._current(), self.measuring
        return {"mode": self.mode, "path": path, "measuring": measuring, "fps": dict(self.fps)}
