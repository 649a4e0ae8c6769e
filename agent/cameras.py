"""Frame sources: a V4L2 device, an RTSP/HTTP stream, a video file or a folder of images, each read on its
own thread so a slow or failing camera never holds up the others.

A camera keeps only its newest frame: when inference is slower than the camera, older frames are
dropped (latest frame wins) and counted. Video files, streams and devices are decoded on demand: the camera's
thread grabs every frame the source sends (keeping a stream current), but converts one into an image only
when the consumer wants a frame: once it has taken the last one, when the one waiting for it is older than
FRESH_S, and while the consumer is due back (by the interval between its last two takes), so the frame it
gets then is the newest, not the one converted just after its last take. A stream read with max_fps is still
grabbed at its own rate and all but max_fps frames a second are discarded unconverted (frames queued in the
socket would otherwise arrive ever later); a file is played at max_fps (or its own rate). A source that
fails is reopened with exponential backoff, which starts over once the source delivers a frame again; a video
file or image folder that ends is reported as ended (or looped when configured). A stream or file of frames
larger than MAX_FRAME_PIXELS is refused like a source that fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from facefleet.core.backoff import Backoff
from facefleet.vision.errors import ImageError
from facefleet.vision.images import list_images, read_image, to_bgr8

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
MAX_FRAME_PIXELS = 4096 * 3072
"""The largest frame a camera may deliver (12.6 MP: 4K UHD and DCI, 12 MP cameras); a larger one would take
hundreds of MB per frame, in the decoder and in every copy the pipeline makes."""
FRESH_S = 0.25
"""A decoded frame left waiting for the consumer longer than this (s) is replaced by a newer one: at most a
few conversions a second for a camera the agent seldom gets to, and a frame at most about this old when
taken. Also how late (s) a consumer may be on its expected return while every frame is converted for it."""
DUE_FRAMES = 2
"""Frames are converted from this many source intervals before the consumer is expected back: the frame it
takes then is the newest although its returns vary by up to about a frame."""
RATE_WINDOW_S = 10.0
"""The window (s) of the frame rates a camera reports: frames read (CameraStatus.fps) and analysed."""
CameraState = Literal["starting", "running", "retrying", "ended", "stopped"]


class SourceError(Exception):
    """A source cannot be opened or stopped delivering frames."""


class FrameReader(Protocol):
    """An opened source: read() gives the next frame, None at the end of a finite source."""

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class RateWindow:
    """Events over the last `window_s` seconds (monotonic times): their rate."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, at: float) -> None:
        self._times.append(at)
        self._forget(at)

    def clear(self) -> None:
        self._times.clear()

    @property
    def last(self) -> float | None:
        return self._times[-1] if self._times else None

    def rate(self, now: float) -> float:
        """Events per second over the window ending now: the intervals between those in the window over the
        time from the first of them to now (0 with fewer than two)."""
        self._forget(now)
        if len(self._times) < 2 or now <= self._times[0]:
            return 0.0
        return round((len(self._times) - 1) / (now - self._times[0]), 2)

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


@dataclass(frozen=True)
class CameraSettings:
    """One camera. source: a device index ('0'), a device path, an rtsp:// or http(s):// URL, a video file
    or a folder of images. max_fps: read at most this often (0 = as fast as the source gives frames, and
    files play at their own frame rate). loop: restart a file or folder at its end. timeout_s: how long
    opening a stream or waiting for its next frame may take before it counts as failed."""

    name: str
    source: str
    max_fps: float = 0.0
    loop: bool = False
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 5.0


@dataclass(frozen=True)
class CameraStatus:
    """What a camera is doing: frames read and dropped so far, the last error and when it retries. fps: the
    frames read per second over the last RATE_WINDOW_S (frames discarded for max_fps not counted)."""

    name: str
    state: CameraState
    frames_read: int = 0
    frames_dropped: int = 0
    fps: float = 0.0
    error: str | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True)
class CameraFrame:
    """A frame with its camera, sequence number (from 1) and capture time: captured_at on the wall clock
    (time.time(), seconds) for events and schedules, seen_at on a clock that never steps back
    (time.monotonic(), seconds) for intervals."""

    camera: str
    number: int
    captured_at: float
    image: Frame
    seen_at: float = field(default_factory=time.monotonic)


def open_reader(settings: CameraSettings) -> FrameReader:
    """Open a camera's source; raises SourceError with the source named when it cannot."""
    source = settings.source
    path = Path(source)
    if path.is_dir():
        return FolderReader(path)
    timeout_ms = round(settings.timeout_s * 1000)
    if source.isdigit():
        return CaptureReader(int(source), source, timeout_ms)
    if "://" not in source and not path.exists():
        raise SourceError(f"{source}: no such file, folder or device")
    return CaptureReader(source, source, timeout_ms)


class FolderReader:
    """Images of a folder in name order, one per read(); unreadable files are skipped with a warning."""

    def __init__(self, folder: Path) -> None:
        self.files = list_images(folder)
        if not self.files:
            raise SourceError(f"{folder}: folder holds no images")
        self.position = 0

    def read(self) -> Frame | None:
        while self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            try:
                return read_image(path)
            except ImageError as exc:
                log.warning("skipping %s", exc)
        return None

    def close(self) -> None:
        self.position = len(self.files)


class CaptureReader:
    """OpenCV VideoCapture over a device, a stream URL or a video file, with open and read timeouts; frames
    over max_pixels are refused (at open, from the size the source declares, and on every frame). read() is
    grab() and retrieve(): grab() takes the next frame from the source (False at the end of a file),
    retrieve() converts the frame grabbed last into an image."""

    def __init__(
        self, target: int | str, label: str, timeout_ms: int, max_pixels: int = MAX_FRAME_PIXELS
    ) -> None:
        self.label = label
        self.max_pixels = max_pixels
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        is_device = isinstance(target, int) or target.startswith("/dev/video")
        self.capture = cv2.VideoCapture(target, cv2.CAP_V4L2 if is_device else cv2.CAP_ANY, timeouts)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(f"{label}: cannot open (no such device, unreachable stream or unreadable file)")
        width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width * height > max_pixels:
            self.capture.release()
            raise self._too_large(width, height)
        self.is_file = isinstance(target, str) and "://" not in target and not target.startswith("/dev/")
        if self.is_file and isinstance(target, str) and self._fourcc() == "MJPG":
            self._use_mjpeg_reader(target)
        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.file_fps = fps if self.is_file and 0 < fps <= 240 else 0.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.is_file else 0
        self.frame_count = max(count, 0)
        """The frames a file declares (0: unknown, or not a file)."""
        self.position = 0
        """Frames grabbed since the file was opened."""

    def read(self) -> Frame | None:
        if not self.grab():
            return None
        return self.retrieve()

    def _fourcc(self) -> str:
        code = int(self.capture.get(cv2.CAP_PROP_FOURCC) or 0)
        return "".join(chr((code >> shift) & 0xFF) for shift in (0, 8, 16, 24))

    def _use_mjpeg_reader(self, path: str) -> None:
        """Read a Motion JPEG file with OpenCV's own reader, whose grab() only finds the frame in the file
        (FFmpeg's decodes it): a frame nobody analyses costs nothing. FFmpeg's stays if this one refuses."""
        mjpeg = cv2.VideoCapture(path, cv2.CAP_OPENCV_MJPEG)
        if mjpeg.isOpened():
            self.capture.release()
            self.capture = mjpeg
        else:
            mjpeg.release()

    def grab(self) -> bool:
        """Take the next frame from the source without converting it; False at the end of a file. Raises
        SourceError when a stream or device stops delivering frames."""
        if not self.capture.grab():
            if self.is_file:
                return False
            raise SourceError(f"{self.label}: stopped delivering frames")
        self.position += 1
        return True

    @property
    def at_last_frame(self) -> bool:
        """The frame grabbed last is the last frame the file declares (none can be converted after it)."""
        return self.frame_count > 0 and self.position >= self.frame_count

    def retrieve(self) -> Frame | None:
        """The frame grabbed last as an image, None if it cannot be converted; raises SourceError if it is
        over the size limit."""
        ok, frame = self.capture.retrieve()
        if not ok or frame is None:
            return None
        height, width = frame.shape[:2]
        if width * height > self.max_pixels:  # the stream changed its resolution
            raise self._too_large(width, height)
        return to_bgr8(frame, self.label)

    def _too_large(self, width: int, height: int) -> SourceError:
        return SourceError(
            f"{self.label}: frames of {width}×{height} pixels ({width * height / 1e6:.1f} MP) are over the "
            f"{self.max_pixels / 1e6:.1f} MP limit; set the camera to a lower resolution or use its substream"
        )

    def close(self) -> None:
        self.capture.release()


class Camera:
    """Reads one source on a daemon thread, keeping only the newest frame. The consumer takes frames with
    next_frame() and tells which it analysed with analysed(), whose figures are analysed_fps and
    analysed_age_s."""

    def __init__(
        self,
        settings: CameraSettings,
        opener: Callable[[CameraSettings], FrameReader] = open_reader,
        on_status: Callable[[CameraStatus], None] | None = None,
    ) -> None:
        self.settings = settings
        self._opener = opener
        self._on_status = on_status
        self._condition = threading.Condition()
        self._latest: CameraFrame | None = None
        """The newest frame converted to an image (of a reader that grabs, not always the newest grabbed)."""
        self._taken = 0
        """The number of the last frame next_frame() handed out."""
        self._taken_at: float | None = None
        """When (monotonic) next_frame() last handed out a frame."""
        self._take_gap: float | None = None
        """The interval (s) between the last two frames next_frame() handed out: when the consumer is due
        back."""
        self._number = 0
        """The number of the last frame read, counted on across reopenings of the source."""
        self._read = RateWindow()
        self._analysed = RateWindow()
        self._analysed_age: float | None = None
        self._status = CameraStatus(settings.name, "starting")
        self._traced: str | None = None
        """The last unexpected failure logged with its traceback."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{settings.name}", daemon=True)

    def start(self) -> Camera:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        self._thread.join(timeout)

    def request_stop(self) -> None:
        """Ask the thread to stop, without waiting for it (a read in progress is finished first)."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the thread to end; whether it has."""
        self._thread.join(max(timeout, 0.0))
        return not self._thread.is_alive()

    @property
    def status(self) -> CameraStatus:
        """The camera's status; its fps as of the last frame read, or of now once none came for a second (a
        camera that slowed down or stopped shows it)."""
        with self._condition:
            now = time.monotonic()
            last = self._read.last
            if last is not None and now - last > 1.0 and self._status.fps:
                self._status = replace(self._status, fps=self._read.rate(now))
            return self._status

    def analysed(self, frame: CameraFrame, at: float | None = None) -> None:
        """The consumer analysed `frame` (at `at` on the monotonic clock, default now): counted in
        analysed_fps, its age then kept as analysed_age_s."""
        at = time.monotonic() if at is None else at
        with self._condition:
            self._analysed.add(at)
            self._analysed_age = max(at - frame.seen_at, 0.0)

    @property
    def analysed_fps(self) -> float:
        """Frames of this camera analysed per second over the last RATE_WINDOW_S (as analysed() was told)."""
        with self._condition:
            return self._analysed.rate(time.monotonic())

    @property
    def analysed_age_s(self) -> float | None:
        """How old the last analysed frame was when its analysis ended (s, from the moment the camera read
        it: seen_at); None before the first."""
        with self._condition:
            return None if self._analysed_age is None else round(self._analysed_age, 4)

    def next_frame(self, after: int, timeout: float) -> CameraFrame | None:
        """The newest frame numbered above `after`, waiting up to timeout seconds; None if none came.
        Frames the caller never took are counted as dropped."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._latest is None or self._latest.number <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set() or self._status.state in ("ended", "stopped"):
                    if self._latest is not None and self._latest.number > after:
                        break
                    return None
                self._condition.wait(remaining)
            frame = self._latest
            skipped = frame.number - after - 1
            if skipped > 0:
                self._status = replace(self._status, frames_dropped=self._status.frames_dropped + skipped)
            self._taken = max(self._taken, frame.number)
            now = time.monotonic()
            if self._taken_at is not None:
                self._take_gap = now - self._taken_at
            self._taken_at = now
            return frame

    def _set_status(self, **changes: object) -> None:
        with self._condition:
            self._status = replace(self._status, **changes)  # type: ignore[arg-type]
            status = self._status
            self._condition.notify_all()
        if self._on_status is not None:
            self._on_status(status)

    def _run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s, jitter=0.0)
        while not self._stop.is_set():
            try:
                reader = self._opener(self.settings)
            except Exception as exc:  # a SourceError, the system's (no file descriptor left) or a library's
                self._retry(exc, backoff.next())
                continue
            self._set_status(state="running", error=None, retry_in_s=None)
            log.info("camera '%s': reading %s", self.settings.name, self.settings.source)
            try:
                ended = self._read_all(reader, backoff)
            except Exception as exc:
                ended = False
                self._retry(exc, backoff.next())
            finally:
                reader.close()
            if ended and not self.settings.loop:
                log.info("camera '%s': %s ended", self.settings.name, self.settings.source)
                self._set_status(state="ended")
                return
        self._set_status(state="stopped")

    def _read_all(self, reader: FrameReader, backoff: Backoff) -> bool:
        """Read until the source ends (True) or stop is asked (False); raises SourceError on a failure.
        The first frame resets the backoff: a stream that worked again is retried after the shortest delay
        when it next fails, while one that opens but never delivers a frame keeps backing off.

        A CaptureReader's frames are grabbed, and converted only when wanted (_wanted). A stream or device is
        grabbed as fast as it sends, and with max_fps the frames that come sooner than 1/max_fps after the
        last one kept are discarded; a file (and any other reader) is read at max_fps, or at the file's own
        rate, by waiting between frames."""
        interval = 1.0 / self.settings.max_fps if self.settings.max_fps > 0 else 0.0
        capture = reader if isinstance(reader, CaptureReader) else None
        live = capture is not None and not capture.is_file
        if interval == 0.0 and capture is not None and capture.file_fps:
            interval = 1.0 / capture.file_fps
        pace = 0.0 if live else interval
        next_due = time.monotonic()
        read_here = 0
        while not self._stop.is_set():
            if capture is not None:
                if not capture.grab():
                    return True
                seen_at = time.monotonic()
                if live and seen_at < next_due:
                    continue  # max_fps: discarded unconverted, the stream kept current
                if live and interval:  # on a grid of 1/max_fps, started again after a stall
                    next_due += interval
                    if next_due <= seen_at:
                        next_due = seen_at + interval
                wanted = self._wanted(seen_at) or (capture.at_last_frame and not self.settings.loop)
                image = capture.retrieve() if wanted else None
            else:
                image = reader.read()
                if image is None:
                    return True
                seen_at = time.monotonic()
            read_here += 1
            if read_here == 1:
                backoff.reset()
                with self._condition:
                    self._read.clear()  # the rate of this opening
            self._frame_read(image, seen_at)
            if pace:
                next_due += pace
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_due = time.monotonic()
        return False

    def _wanted(self, now: float) -> bool:
        """Whether the frame just grabbed should be converted: the consumer took the last converted one (or
        there is none yet: it always finds a frame newer than the last it took), that one has waited longer
        than FRESH_S, or the consumer is due back. It is due from DUE_FRAMES source intervals (at the rate
        frames are read) before the last take plus the interval between the last two takes, until FRESH_S
        after: the frame converted last before it comes is then the newest, not one that waited since just
        after its last take (a frame loop that analyses for 80 ms between takes would get a frame 80 ms old).
        A consumer that comes every few seconds costs the frames of that window, not every frame."""
        with self._condition:
            latest = self._latest
            if latest is None or self._taken >= latest.number or now - latest.seen_at > FRESH_S:
                return True
            fps = self._status.fps
            if self._taken_at is None or self._take_gap is None or fps <= 0:
                return False
            due = self._taken_at + self._take_gap
            return due - DUE_FRAMES / fps <= now <= due + FRESH_S

    def _frame_read(self, image: Frame | None, seen_at: float) -> None:
        """Count a frame read (grabbed), numbered; with its image, it becomes the newest frame."""
        with self._condition:
            self._number += 1
            if image is not None:
                self._latest = CameraFrame(self.settings.name, self._number, time.time(), image, seen_at)
            self._read.add(seen_at)
            self._status = replace(
                self._status, frames_read=self._status.frames_read + 1, fps=self._read.rate(seen_at)
            )
            self._condition.notify_all()

    def _retry(self, failure: Exception, delay_s: float) -> None:
        """Report a failed source and wait delay_s before the next attempt. A failure other than a SourceError
        (e.g. no file descriptor left, or a library's error) is logged with its traceback the first time."""
        trace: Exception | None = None
        if isinstance(failure, SourceError):
            error = str(failure)
        else:
            error = f"{self.settings.source}: {type(failure).__name__}: {failure}"
            if error != self._traced:
                self._traced, trace = error, failure
        log.warning("camera '%s': %s (retrying in %g s)", self.settings.name, error, delay_s, exc_info=trace)
        self._set_status(state="retrying", error=error, retry_in_s=delay_s)
        self._stop.wait(delay_s)


def stop_cameras(cameras: Iterable[Camera], timeout: float = 5.0) -> list[str]:
    """Ask every camera to stop, then wait for them all together, timeout seconds at most; the names of those
    still inside a read (a stalled stream), whose daemon threads end with the process."""
    cameras = list(cameras)
    for camera in cameras:
        camera.request_stop()
    deadline = time.monotonic() + timeout
    return [camera.settings.name for camera in cameras if not camera.join(deadline - time.monotonic())]
