"""Web console sessions: signing in with an operator token gives a random session id (the HttpOnly cookie)
and a CSRF token (which the page sends back as a header on every change). Sessions live in memory only.
The operator's token stays with the session on the server, and every request checks it again, so revoking
the token ends its sessions within the token cache time."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_ID_BYTES = 32
MAX_SESSION_ID_CHARS = 64
"""A session id is 43 URL-safe characters; anything longer is not one of ours."""
SIGN_IN_WINDOW_S = 60.0
"""The window of ConsoleSessions.sign_ins_per_minute."""


@dataclass(frozen=True)
class ConsoleSession:
    """One signed-in browser. token: the operator token it signed in with (kept here, never sent back);
    started and expires: Unix seconds."""

    token: str
    csrf_token: str
    started: float
    expires: float

    def csrf_matches(self, offered: str | None) -> bool:
        """Whether `offered` is this session's CSRF token (constant time)."""
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf_token.encode())


class SignInsTooFrequentError(Exception):
    """A token signed in more often than its limit allows; retry_after_s: when the next sign-in may start."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionsFullError(Exception):
    """The console holds its most sessions, all of other tokens."""


class ConsoleSessions:
    """The server's console sessions, by the sha256 of their id (an id is never stored as such).

    idle_s: a session unused this long ends; max_age_s: it ends this long after sign-in anyway; limit: most
    sessions at once; per_token: most sessions of one token. A sign-in ends only sessions of its own token
    (the least recently used first), never another operator's; sign_ins_per_minute: most sign-ins of one
    token in any minute (each is audited)."""

    def __init__(
        self,
        idle_s: float,
        max_age_s: float,
        limit: int,
        clock: Callable[[], float] = time.time,
        *,
        per_token: int = 20,
        sign_ins_per_minute: int = 10,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.limit = limit
        self.per_token = per_token
        self.sign_ins_per_minute = sign_ins_per_minute
        self._clock = clock
        self._sessions: OrderedDict[bytes, tuple[ConsoleSession, float]] = OrderedDict()
        self._sign_ins: dict[bytes, deque[float]] = {}
        """sha256 of a token → the times of its sign-ins in the last minute (tokens that were checked)."""

    def start(self, token: str) -> tuple[str, ConsoleSession]:
        """A new session for an operator token already checked: (its id for the cookie, the session).
        Room is made only among the token's own sessions (its least recently used ends): with `limit`
        sessions of other tokens live, SessionsFullError; SignInsTooFrequentError when the token signed in
        sign_ins_per_minute times in the last minute."""
        now = self._clock()
        while self._sessions:
            oldest, used = next(iter(self._sessions.values()))
            if now < oldest.expires and now - used < self.idle_s:
                break
            self._sessions.popitem(last=False)
        owned = [key for key, (other, _) in self._sessions.items() if other.token == token]
        ending = owned[: max(0, len(owned) + 1 - self.per_token)]  # least recently used first
        if len(self._sessions) - len(ending) >= self.limit:
            if not owned:
                raise SessionsFullError(
                    f"the console holds its most sessions ({self.limit}, [console] max_sessions), all in "
                    "use by other operators; try again when one signs out or is idle, or raise max_sessions"
                )
            ending = owned[: len(ending) + 1]
        self._note_sign_in(token, now)
        for key in ending:
            del self._sessions[key]
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = ConsoleSession(token, secrets.token_urlsafe(SESSION_ID_BYTES), now, now + self.max_age_s)
        self._sessions[_key(session_id)] = (session, now)
        return session_id, session

    def _note_sign_in(self, token: str, now: float) -> None:
        for key in [key for key, times in self._sign_ins.items() if now - times[-1] >= SIGN_IN_WINDOW_S]:
            del self._sign_ins[key]
        # the sign-ins of the last minute; a time ahead of now is forgotten (the clock was set back)
        times = deque(t for t in self._sign_ins.get(_key(token), ()) if 0 <= now - t < SIGN_IN_WINDOW_S)
        self._sign_ins[_key(token)] = times
        if len(times) >= self.sign_ins_per_minute:
            retry_after = SIGN_IN_WINDOW_S - (now - times[0])
            raise SignInsTooFrequentError(
                f"this token signed in {len(times)} times in the last minute, its limit; sign in again in "
                f"{math.ceil(retry_after)} s, and keep one session per browser",
                retry_after,
            )
        times.append(now)

    def find(self, session_id: str) -> ConsoleSession | None:
        """The live session with this id, marked as used now; None for an unknown or ended one."""
        if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
            return None
        key = _key(session_id)
        found = self._sessions.get(key)
        if found is None:
            return None
        session, used = found
        now = self._clock()
        if now >= session.expires or now - used >= self.idle_s:
            del self._sessions[key]
            return None
        self._sessions[key] = (session, now)
        self._sessions.move_to_end(key)
        return session

    def end(self, session_id: str) -> None:
        """Sign out: the session is gone (nothing happens for an unknown id)."""
        if session_id and len(session_id) <= MAX_SESSION_ID_CHARS:
            self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
