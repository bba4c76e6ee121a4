"""One rate limit for the whole service: the moving windows in one named, detached Ray actor.

Every Ingress replica, on every node, asks the same actor (`RateLimiter`, named after the
Serve application) for each grant, so N replicas let through one limit's worth, not N. Why a
Ray actor and not Redis: Ray already spans every node the replicas run on, so there is no
extra server to run, secure or configure; a call is one small message (a fraction of a
millisecond on one node) and the actor handles them one at a time, so there are no races.
Redis would be the choice for limits shared across several Ray clusters.

The actor is part of the ingress side (like `service.serving.ingress`, it imports the API
layer's window arithmetic, `service.api.limits.MovingWindow`). Detached and restarted by
Ray if it dies: a restart forgets the current minute, and while it cannot be reached the
replicas let requests through (logged) rather than fail them; a limiter is a safeguard, not
a dependency of every answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from service.api.access import Access, KeySettings, RateLimitSettings, UsageRecorder
from service.api.keys import KeyCache, KeyStore
from service.api.limits import WINDOW_S, Decision, Limits, MovingWindow

logger = logging.getLogger("ray.serve")

NAMESPACE = "service"  # fixed, so replicas in any job namespace find the same actor
CALL_TIMEOUT_S = 1.0
WARN_EVERY_S = 30.0


class RateLimiter:
    """The windows of every caller; one instance per application, in its own actor."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window = MovingWindow(window_s)

    def acquire(self, caller: str, characters: int, limits: Limits) -> Decision:
        return self.window.acquire(caller, characters, limits, time.monotonic())

    def usage(self, caller: str) -> tuple[int, int]:
        return self.window.usage(caller, time.monotonic())


def actor_name(application: str) -> str:
    return f"rate-limiter-{application}"


def limiter_actor(application: str) -> Any:
    """The application's limiter actor, made by whichever replica asks first."""
    return (
        ray.remote(RateLimiter)
        .options(
            name=actor_name(application),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
        )
        .remote()
    )


class SharedLimiter:
    """`service.api.limits.Limiter` over the actor; grants when the actor does not answer."""

    def __init__(self, actor: Any, timeout_s: float = CALL_TIMEOUT_S):
        self.actor = actor
        self.timeout_s = timeout_s
        self._warned_at = -WARN_EVERY_S

    def _warn(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning("rate limiter unreachable, letting requests through: %r", error)

    async def acquire(self, caller: str, characters: int, limits: Limits) -> Decision:
        try:
            return await asyncio.wait_for(
                _resolved(self.actor.acquire.remote(caller, characters, limits)), self.timeout_s
            )
        except Exception as error:
            self._warn(error)
            return Decision(True, 0, 0)

    async def usage(self, caller: str) -> tuple[int, int]:
        try:
            return await asyncio.wait_for(
                _resolved(self.actor.usage.remote(caller)), self.timeout_s
            )
        except Exception as error:
            self._warn(error)
            return 0, 0


async def _resolved(ref: Any) -> Any:
    return await ref


def serving_access(
    keys: KeySettings, rate_limit: RateLimitSettings, recorder: UsageRecorder
) -> Access | None:
    """An Ingress replica's `Access`: the shared limiter and the key cache; None when the
    config turns on neither keys nor limits (then nothing is checked or counted)."""
    from ray import serve

    if not (keys.required or rate_limit.limits.any):
        return None
    actor = limiter_actor(serve.get_replica_context().app_name)
    ray.get(actor.usage.remote(""), timeout=60)  # created and answering before traffic comes
    cache = None
    if keys.required:
        assert keys.db is not None, "the app builder resolves keys.db"
        cache = KeyCache(KeyStore(keys.db), keys.ttl_s)
        cache.refresh()
        if not cache.known():
            logger.warning(
                "API keys are required but %s holds none: add one with "
                "`python -m service keys add --db %s`",
                keys.db,
                keys.db,
            )
    return Access(keys.required, rate_limit, SharedLimiter(actor), cache, recorder)
