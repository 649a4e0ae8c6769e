"""The child process of vision.models.conversion: `python -I -m facefleet.vision.models.conversion_child`,
the request as JSON on standard input, the reply as one JSON line on standard output.

Before OpenVINO is imported it limits itself: its data segment to the request's memory_bytes, its CPU time
to cpu_seconds, one CPU (OpenVINO starts a thread with its own stack per CPU it may use, and each counts
against the memory limit), and it ends when the process that started it ends."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

MAX_REQUEST_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1


def limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    """Hold this process to memory_bytes of data segment, cpu_seconds of CPU time and one CPU; SIGKILL it
    when its parent ends."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's timeout still ends it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:1])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))


def main() -> None:
    """One request in, one reply line out; what OpenVINO prints goes to standard error."""
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST_BYTES))
    limit_self(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    from facefleet.vision.models.conversion import run_request  # OpenVINO comes in here, limited

    reply = run_request(request)
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
