"""Rate limits: requests and characters per minute per caller, over a moving window.

`MovingWindow` is the arithmetic, with the clock passed in: it keeps, per caller, the time and
size of each request it granted in the last `window_s` seconds, so "at most N per minute"
holds over every minute, not only over calendar minutes (a fixed window lets 2N through
around a minute's boundary). Refused requests are not logged: a caller who keeps sending
over the limit still gets its full share once old requests leave the window.

Where the window lives is the `Limiter`'s business: `LocalLimiter` keeps it in this process
(the app without Ray, the tests); the ingress on Ray Serve passes a client of one named Ray
actor that every replica shares (`service.serving.ratelimit`), so the limit is one limit for
the whole service however many replicas there are.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

WINDOW_S = 60.0
SWEEP_EVERY = 4096  # acquisitions between sweeps of callers whose window emptied

LimitName = Literal["requests", "characters"]


@dataclass(frozen=True)
class Limits:
    """Per window; None: no limit of that kind."""

    requests: int | None = None
    characters: int | None = None

    @property
    def any(self) -> bool:
        return self.requests is not None or self.characters is not None


@dataclass(frozen=True)
class Decision:
    granted: bool
    requests: int  # granted in the window, this one included if granted
    characters: int
    limit: LimitName | None = None  # the limit that refused it
    retry_after_s: float = 0.0  # when a retry can pass (if nothing else arrives meanwhile)
    never: bool = False  # refused by a limit smaller than the request itself


class MovingWindow:
    """Granted requests per caller over the last `window_s` seconds; `now` in seconds."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self._log: dict[str, deque[tuple[float, int]]] = {}
        self._characters: dict[str, int] = {}
        self._calls = 0

    def _expire(self, caller: str, now: float) -> deque[tuple[float, int]]:
        log = self._log.setdefault(caller, deque())
        horizon = now - self.window_s
        while log and log[0][0] <= horizon:
            self._characters[caller] -= log.popleft()[1]
        return log

    def usage(self, caller: str, now: float) -> tuple[int, int]:
        """(requests, characters) granted in the window ending at `now`."""
        if caller not in self._log:
            return 0, 0
        log = self._expire(caller, now)
        return len(log), self._characters.get(caller, 0)

    def acquire(self, caller: str, characters: int, limits: Limits, now: float) -> Decision:
        """Grant (and log) one request of `characters`, or say which limit refuses it and when
        a retry would pass."""
        self._calls += 1
        if self._calls % SWEEP_EVERY == 0:
            self._sweep(now)
        log = self._expire(caller, now)
        self._characters.setdefault(caller, 0)
        used, chars = len(log), self._characters[caller]

        if limits.requests is not None and used + 1 > limits.requests:
            if limits.requests == 0:
                return Decision(False, used, chars, "requests", self.window_s, never=True)
            # Enough of the oldest must leave that one more fits.
            leaving = log[used - limits.requests]
            return Decision(False, used, chars, "requests", leaving[0] + self.window_s - now)
        if limits.characters is not None and chars + characters > limits.characters:
            if characters > limits.characters:
                return Decision(False, used, chars, "characters", self.window_s, never=True)
            freed = 0
            for at, size in log:
                freed += size
                if chars - freed + characters <= limits.characters:
                    return Decision(False, used, chars, "characters", at + self.window_s - now)
        log.append((now, characters))
        self._characters[caller] += characters
        return Decision(True, used + 1, chars + characters)

    def _sweep(self, now: float) -> None:
        for caller in list(self._log):
            if not self._expire(caller, now):
                del self._log[caller]
                del self._characters[caller]


def retry_after_header(decision: Decision) -> str:
    """Whole seconds, rounded up: a client that waits that long is not refused again."""
    return str(max(1, math.ceil(decision.retry_after_s)))


class Limiter(Protocol):
    async def acquire(self, caller: str, characters: int, limits: Limits) -> Decision:
        """Must answer quickly; a limiter that cannot answer grants (and logs why)."""
        ...

    async def usage(self, caller: str) -> tuple[int, int]:
        """(requests, characters) granted to `caller` in the current window."""
        ...


class LocalLimiter:
    """The window in this process: right for one process (the app without Ray, tests)."""

    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic):
        self.window = MovingWindow(window_s)
        self.clock = clock

    async def acquire(self, caller: str, characters: int, limits: Limits) -> Decision:
        return self.window.acquire(caller, characters, limits, self.clock())

    async def usage(self, caller: str) -> tuple[int, int]:
        return self.window.usage(caller, self.clock())
