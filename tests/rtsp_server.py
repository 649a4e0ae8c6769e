"""An RTSP server for the camera tests, run by the system python (which has GStreamer's `gi` bindings from
apt): it decodes a video file once and serves it at rtsp://127.0.0.1:PORT/PATH as H.264 over RTP, looping
forever at the file's frame rate like a live IP camera. Every client gets its own stream from the first
frame. SIGTERM or SIGINT stops it.

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --path /stream VIDEO
    /usr/bin/python3 tests/rtsp_server.py --check    # exit 0 when everything it needs is installed
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass
from typing import Any

# decodebin finds avidemux and jpegdec for the tests' MJPG AVI files.
ELEMENTS = ("filesrc", "decodebin", "avidemux", "jpegdec", "videoconvert", "appsink", "appsrc", "x264enc")
ELEMENTS += ("rtph264pay",)
# Frames are kept as BGR: videoconvert turns JPEG's full-range YUV into RGB correctly, but would hand it to
# x264enc unchanged as limited-range I420 (greys would come out darker).
RAW = "video/x-raw,format=BGR"
# threads=1: tune=zerolatency otherwise cuts each frame into slices, one per thread, and the first frames a
# client decodes come out half smeared.
ENCODER = "x264enc tune=zerolatency speed-preset=ultrafast threads=1 pass=quant quantizer=20"


@dataclass(frozen=True)
class Clip:
    """Raw BGR frames of a video (each height·width·3 bytes); fps in frames per second."""

    frames: list[bytes]
    width: int
    height: int
    fps: int


def load(gst: Any, path: str, default_fps: int) -> Clip:
    """Decode every frame of the video at `path` into memory; default_fps when the file gives no rate."""
    pipeline = gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! {RAW} ! appsink name=sink sync=false'
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(gst.State.PLAYING)
    frames: list[bytes] = []
    caps = None
    while (sample := sink.emit("try-pull-sample", 10 * gst.SECOND)) is not None:  # None: the end or an error
        caps = sample.get_caps().get_structure(0)
        buffer = sample.get_buffer()
        frames.append(buffer.extract_dup(0, buffer.get_size()))
    error = pipeline.get_bus().pop_filtered(gst.MessageType.ERROR)
    pipeline.set_state(gst.State.NULL)
    if error is not None or caps is None:
        detail = error.parse_error()[0].message if error is not None else "no frames"
        raise SystemExit(f"rtsp_server: cannot decode {path}: {detail}")
    ok, numerator, denominator = caps.get_fraction("framerate")
    fps = round(numerator / denominator) if ok and numerator > 0 and denominator > 0 else default_fps
    return Clip(frames, caps.get_value("width"), caps.get_value("height"), fps)


def serve(gst: Any, glib: Any, rtsp_server: Any, port: int, mount: str, clip: Clip) -> None:
    """Serve the clip on 127.0.0.1:port at mount until SIGTERM or SIGINT."""
    caps = f"{RAW},width={clip.width},height={clip.height},framerate={clip.fps}/1"
    launch = (
        f"( appsrc name=frames format=time caps={caps} ! videoconvert ! video/x-raw,format=I420 "
        f"! {ENCODER} key-int-max={clip.fps} ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    duration = gst.SECOND // clip.fps

    def need_data(source: Any, _length: int, position: list[int]) -> None:
        buffer = gst.Buffer.new_wrapped(clip.frames[position[0] % len(clip.frames)])
        buffer.pts = position[0] * duration
        buffer.duration = duration
        position[0] += 1
        source.emit("push-buffer", buffer)

    def configure(_factory: Any, media: Any) -> None:
        source = media.get_element().get_by_name_recurse_up("frames")
        source.connect("need-data", need_data, [0])  # each client's stream counts its own frames

    factory = rtsp_server.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.connect("media-configure", configure)
    server = rtsp_server.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    loop = glib.MainLoop()
    for number in (signal.SIGTERM, signal.SIGINT):
        glib.unix_signal_add(glib.PRIORITY_HIGH, number, loop.quit)
    print(f"rtsp_server: serving rtsp://127.0.0.1:{port}{mount} ({clip.fps} fps)", flush=True)
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("video", nargs="?")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/stream")
    parser.add_argument("--fps", type=int, default=10, help="frame rate when the file does not give one")
    parser.add_argument("--check", action="store_true", help="only check that GStreamer has what it needs")
    args = parser.parse_args()
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    missing = [name for name in ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        sys.exit(f"rtsp_server: GStreamer elements missing: {', '.join(missing)}")
    if args.check:
        return
    if args.video is None:
        parser.error("a video file is needed")
    serve(Gst, GLib, GstRtspServer, args.port, args.path, load(Gst, args.video, args.fps))


if __name__ == "__main__":
    main()
