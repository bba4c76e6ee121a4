"""API keys in SQLite: who may call the service, and each caller's own limits.

A key is shown once, when it is made (`python -m service keys add`); the database keeps only
its sha256, so a copy of the file lets nobody call the service. Each row also carries the
key's limits (requests and characters per minute, either optional) and its lifetime usage,
which the ingress replicas add to every few seconds.

Replicas do not ask the database on every request: `KeyCache` reads the whole table again
when it is older than a short TTL (a few seconds), so a key added or removed by the CLI is
seen by every replica that soon, with no restart and no per-request disk access.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_PREFIX = "sk-"  # makes a leaked key easy to recognise (and to grep for)
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
DEFAULT_TTL_S = 2.0
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL UNIQUE,
    req_limit INTEGER,
    char_limit INTEGER,
    created REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    characters INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    last_used REAL
)
"""
_COLUMNS = "name, key_sha256, req_limit, char_limit, created, requests, characters, rate_limited"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One row, without the key (which is never stored)."""

    name: str
    key_sha256: str
    req_limit: int | None  # requests per minute; None: the service's default, if any
    char_limit: int | None  # characters per minute; likewise
    created: float  # Unix time
    requests: int = 0  # lifetime totals, as last flushed by the replicas
    characters: int = 0
    rate_limited: int = 0


@dataclass
class UsageDelta:
    """What one replica counted for a key since its last flush."""

    requests: int = 0
    characters: int = 0
    rate_limited: int = 0


class KeyStore:
    """The key database at `path`; made (table included) on first use."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        connection.execute(_SCHEMA)
        return connection

    def add(
        self, name: str | None = None, req_limit: int | None = None, char_limit: int | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key and its record; the key itself is returned here and never again."""
        for limit in (req_limit, char_limit):
            if limit is not None and limit < 0:
                raise ValueError("limits must be 0 or more")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = key_hash(key)
        record = KeyRecord(name or f"key-{digest[:8]}", digest, req_limit, char_limit, time.time())
        with self._connect() as connection:
            try:
                connection.execute(
                    "INSERT INTO api_keys (name, key_sha256, req_limit, char_limit, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (record.name, digest, req_limit, char_limit, record.created),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a key named {record.name!r} exists already") from None
        return record, key

    def records(self) -> list[KeyRecord]:
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def remove(self, key_or_name: str) -> str | None:
        """Remove the key with this name, or this key; the removed key's name, or None."""
        with self._connect() as connection:
            for column, value in (("name", key_or_name), ("key_sha256", key_hash(key_or_name))):
                row = connection.execute(
                    f"SELECT name FROM api_keys WHERE {column} = ?", (value,)
                ).fetchone()
                if row is not None:
                    connection.execute("DELETE FROM api_keys WHERE name = ?", (row[0],))
                    return row[0]
        return None

    def add_usage(self, deltas: Mapping[str, UsageDelta], now: float | None = None) -> None:
        """Add replicas' counts to the lifetime totals (a removed key's are dropped)."""
        now = time.time() if now is None else now
        with self._connect() as connection:
            connection.executemany(
                "UPDATE api_keys SET requests = requests + ?, characters = characters + ?, "
                "rate_limited = rate_limited + ?, last_used = ? WHERE name = ?",
                [(d.requests, d.characters, d.rate_limited, now, n) for n, d in deltas.items()],
            )


class KeyCache:
    """The replica's view of the key store: looked up in memory, re-read after `ttl_s`.

    Usage is counted in memory too and written with the next re-read. Not thread-safe: one
    per event loop (an ingress replica has one). `clock` is for tests.
    """

    def __init__(self, store: KeyStore, ttl_s: float = DEFAULT_TTL_S, clock=time.monotonic):
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_hash: dict[str, KeyRecord] = {}
        self._by_name: dict[str, KeyRecord] = {}
        self._read_at: float | None = None
        self._pending: dict[str, UsageDelta] = {}
        self.refreshing: Any = None  # the re-read under way, if any (an asyncio future)
        self.flush_scheduled = False
        # Counts being written by a refresh: still counted in totals() until the re-read that
        # follows the write has replaced the records (else a total dips while a refresh runs).
        self._flushing: dict[str, UsageDelta] = {}

    def expire(self) -> None:
        """Make the next `stale()` true."""
        self._read_at = None

    def stale(self) -> bool:
        return self._read_at is None or self.clock() - self._read_at >= self.ttl_s

    def refresh(self) -> None:
        """Flush the usage counted so far and re-read every key (blocking: run it in a thread).

        A database that cannot be read keeps the last view (and the unflushed counts)."""
        pending, self._pending = self._pending, {}
        self._flushing = pending
        try:
            if pending:
                self.store.add_usage(pending)
            records = self.store.records()
        except sqlite3.Error:
            for name, delta in pending.items():
                self.count(name, delta.requests, delta.characters, delta.rate_limited)
            self._flushing = {}
            self._read_at = self.clock()
            raise
        self._by_hash = {record.key_sha256: record for record in records}
        by_name = {record.name: record for record in records}
        self._by_name, self._flushing = by_name, {}  # one step: totals() sees old or new
        self._read_at = self.clock()

    def known(self) -> int:
        """How many keys the last read found."""
        return len(self._by_hash)

    def lookup(self, key: str) -> KeyRecord | None:
        return self._by_hash.get(key_hash(key))

    def record(self, name: str) -> KeyRecord | None:
        return self._by_name.get(name)

    def count(self, name: str, requests: int = 0, characters: int = 0, rate_limited: int = 0):
        delta = self._pending.setdefault(name, UsageDelta())
        delta.requests += requests
        delta.characters += characters
        delta.rate_limited += rate_limited

    def totals(self, name: str) -> UsageDelta | None:
        """Lifetime totals: the database's as last read, plus what is not flushed yet."""
        record = self._by_name.get(name)
        if record is None:
            return None
        pending = self._pending.get(name, UsageDelta())
        flushing = self._flushing.get(name, UsageDelta())
        return UsageDelta(
            record.requests + pending.requests + flushing.requests,
            record.characters + pending.characters + flushing.characters,
            record.rate_limited + pending.rate_limited + flushing.rate_limited,
        )


def format_records(records: Iterable[KeyRecord]) -> list[str]:
    """`keys list`'s table: names, limits, creation time and usage; never a key."""

    def limit(value: int | None) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"{'name':<24} {'req/min':>8} {'chars/min':>10} {'created (UTC)':<20} "
        f"{'requests':>9} {'characters':>11} {'429s':>6}"
    ]
    for r in records:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created))
        lines.append(
            f"{r.name:<24} {limit(r.req_limit):>8} {limit(r.char_limit):>10} {created:<20} "
            f"{r.requests:>9} {r.characters:>11} {r.rate_limited:>6}"
        )
    return lines
