"""Commands from `cmd/#` in the frame loop: queued from the MQTT thread (refused at once when too many
wait, or when over the size limit; ignored when the name is not a command name), checked against their
schema, executed once per request_id, and answered on `replies/<command>`.

A badge claim (cmd/verify) for a person not enrolled, or past its door's claim rate, is refused with a reply
only: it never reaches the door, so it writes no audit entry and no access event, and a flood of them is
bounded by the replies' own cap in the outbox instead of pushing the doors' real events out of it.

A claim's timeout counts from its arrival: one that waited for the frame loop past it is refused as expired,
never executed late."""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable

from pydantic import ValidationError

from facefleet.agent.commands import (
    CLAIM_WINDOW_S,
    CLAIMS_PER_WINDOW,
    COMMAND_QUEUE_LIMIT,
    REMEMBERED_REQUESTS,
    REPEAT_WINDOW_S,
    ClaimRate,
    RecentRequests,
    VerifyCommand,
    command_name_ok,
    reply_cap,
    request_id_of,
    shown_name,
)
from facefleet.agent.domain.records import Person
from facefleet.agent.publish.events import reply
from facefleet.agent.publish.mqtt import MAX_COMMAND_BYTES
from facefleet.agent.publish.outbox import OutboxPublisher
from facefleet.agent.service.doors import DoorAccess

log = logging.getLogger(__name__)


class CommandDesk:
    """The commands waiting for the frame loop, and their replies.

    outbox: where replies are queued (None: no broker, so replies are only logged); guarded: runs a store
    write whose failure is logged, never fatal; record_error: keeps a refusal among the agent's errors;
    person: the enrolled person of an id, or None (the lookup the doors decide with).
    claims_over_rate counts the claims refused past their door's rate."""

    def __init__(
        self,
        device_id: str,
        doors: DoorAccess,
        outbox: OutboxPublisher | None,
        guarded: Callable[[Callable[[], object]], None],
        record_error: Callable[[str], None],
        person: Callable[[str], Person | None],
    ) -> None:
        self.device_id = device_id
        self.doors = doors
        self.outbox = outbox
        self.guarded = guarded
        self.record_error = record_error
        self.person = person
        self.waiting: queue.Queue[tuple[str, bytes, float]] = queue.Queue(maxsize=COMMAND_QUEUE_LIMIT)
        """(command, payload, arrival in monotonic seconds)"""
        self._executed = RecentRequests(REPEAT_WINDOW_S, REMEMBERED_REQUESTS)
        self._claims = ClaimRate(CLAIMS_PER_WINDOW, CLAIM_WINDOW_S)
        self.claims_over_rate = 0

    def queue(self, command: str, payload: bytes) -> None:
        """On the MQTT thread: queue a command for the frame loop, or refuse it at once when
        COMMAND_QUEUE_LIMIT commands are already waiting (one whose name is not a command name is only
        logged)."""
        if not self._named_well(command):
            return
        try:
            self.waiting.put_nowait((command, payload, time.monotonic()))
        except queue.Full:
            detail = f"busy: {COMMAND_QUEUE_LIMIT} commands are already waiting; not executed, send it again"
            self._reply(command, request_id_of(payload), False, detail, time.time())

    def refuse_oversized(self, command: str, size: int) -> None:
        """On the MQTT thread: answer a command over MAX_COMMAND_BYTES, whose payload is not read."""
        if not self._named_well(command):
            return
        detail = (
            f"command of {size} bytes is over the {MAX_COMMAND_BYTES}-byte limit; not executed "
            "(its request_id is not read from an oversized payload)"
        )
        self._reply(command, None, False, detail, time.time())

    def _named_well(self, command: str) -> bool:
        """False (logged and kept among the errors, never answered: the reply topic would be built from
        it) when `command` is not a command name (commands.COMMAND_NAME)."""
        if command_name_ok(command):
            return True
        detail = (
            f"ignored a command named {shown_name(command)}: a command name is 1-32 lowercase letters, "
            "digits, '_' or '-', starting with a letter; not executed and not answered"
        )
        log.warning("cmd/: %s", detail)
        self.record_error(f"cmd/: {detail}")
        return False

    def execute_waiting(self) -> None:
        """In the frame loop: execute every command waiting, in order."""
        while True:
            try:
                command, payload, arrived = self.waiting.get_nowait()
            except queue.Empty:
                return
            self._execute(command, payload, arrived)

    def _execute(self, command: str, payload: bytes, arrived: float) -> None:
        now = time.time()
        request_id = request_id_of(payload)  # read leniently, so that refusals carry it too
        if command != "verify":
            self._reply(command, request_id, False, f"unknown command {command!r}; supported: verify", now)
            return
        try:
            request = VerifyCommand.model_validate_json(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()
            )
            self._reply(command, request_id, False, f"malformed cmd/verify: {problems}", now)
            return
        door = self.doors.controllers.get(request.door)
        if door is None:
            self._reply(command, request.request_id, False, f"unknown door {request.door!r}", now)
            return
        steady = time.monotonic()
        timeout_s = request.timeout_s or door.door.claim_timeout_s
        refusal = _expired(steady - arrived, timeout_s)
        refusal = refusal or self._executed.duplicate(command, request.request_id, steady)
        refusal = refusal or self._claim_refusal(request, steady)
        if refusal is not None:  # not executed, so not remembered: it may be sent again
            self._reply(command, request.request_id, False, refusal, now)
            return
        if request.request_id is not None:
            self._executed.add((command, request.request_id), steady)
        remaining_s = timeout_s - (steady - arrived)
        immediate = door.claim(request.person_id, steady, remaining_s, request.request_id)
        self._reply(
            command, request.request_id, True, f"verifying {request.person_id!r} at {request.door!r}", now
        )
        if immediate is not None:
            self.doors.act(immediate, door.door.camera)

    def _claim_refusal(self, request: VerifyCommand, steady: float) -> str | None:
        """Why the door does not take this claim (the person is not enrolled, or the door took
        CLAIMS_PER_WINDOW claims in the last CLAIM_WINDOW_S seconds), or None: then it counts towards the
        door's rate. steady: monotonic seconds."""
        if self.person(request.person_id) is None:
            return f"claimed person {request.person_id!r} is not enrolled; no claim made at {request.door!r}"
        if not self._claims.take(request.door, steady):
            self.claims_over_rate += 1
            return (
                f"busy: {request.door!r} took {self._claims.limit} claims in the last "
                f"{self._claims.window_s:g} s; not executed, send it again"
            )
        return None

    def _reply(self, command: str, request_id: str | None, ok: bool, detail: str, now: float) -> None:
        if not ok:
            log.warning("cmd/%s: %s", command, detail)
            self.record_error(f"cmd/{command}: {detail}")
        outbox = self.outbox
        if outbox is None:
            return
        payload = json.dumps(reply(command, request_id, ok, detail, self.device_id, now))
        topic = f"replies/{command}"
        self.guarded(lambda: _queue_reply(outbox, topic, payload))


def _expired(waited_s: float, timeout_s: float) -> str | None:
    """Why a claim that waited waited_s for the frame loop is not executed (its timeout passed), or None."""
    if waited_s < timeout_s:
        return None
    return (
        f"expired: it waited {waited_s:.1f} s for the agent's frame loop, past its timeout of "
        f"{timeout_s:g} s; not executed, send it again"
    )


def _queue_reply(outbox: OutboxPublisher, topic: str, payload: str) -> None:
    """Queue a reply unless reply_cap() replies wait already: a flood of refused commands, taken just before
    the broker went away or while it is slow to acknowledge, must not push queued events out of the outbox.
    (The broker keeps no command while the agent is away: its session ends with the connection.)"""
    cap = reply_cap(outbox.limit)
    if outbox.submit(topic, payload, same_kind_limit=cap) is None:
        log.warning("%s not sent: %d replies are waiting for the broker already", topic, cap)
