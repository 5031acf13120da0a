"""The Redis primary.

Decisions:
- Snapshots: ``SET key doc NX`` -- write-once, and the reply says whether this
  call created the record or found it there.
- User state: compare-and-set in one server-side script. The token is the SHA-1
  of the stored bytes (``redis.sha1hex``), so documents written by the
  reference package or by hand -- which carry no revision -- are still compared
  exactly, and a conflict returns the current document in the same round trip.
- Every command touches one key, so the adapter runs unchanged on Redis Cluster.
- Timeouts and retries are short by default (a session start must not hang on
  a dead server); pass your own client for anything else.
- In-flight commands are capped at the pool's size by a semaphore: redis-py's
  pool raises ``MaxConnectionsError`` past its limit instead of queueing, and
  its blocking pool costs about a tenth of a millisecond per command; the
  semaphore queues a burst for a few microseconds, on our pool or an injected one.
- redis-py errors are mapped once, here, to ``StorageUnavailableError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from autoplay_obs.errors import (
    ConfigurationError,
    MissingDependencyError,
    StorageUnavailableError,
    UnreadableDocumentError,
)
from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._protocol import Stored, token_of
from autoplay_obs.storage.adapters._dict_view import DictView

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStorageAdapter"]

T = TypeVar("T")

# KEYS[1] state key; ARGV[1] expected token ('' = no document); ARGV[2] new
# document; ARGV[3] TTL seconds ('0' = none). {1} on success, {0, current} on
# a conflict ({0} when the key is absent). The token is read from the
# document's first 42 bytes when it starts with our revision, so the document
# itself never enters Lua on the common path (see _protocol.token_of).
_SWAP_SCRIPT = """
local head = redis.call('GETRANGE', KEYS[1], 0, 41)
local token = ''
if string.sub(head, 1, 9) == '{"_rev":"' and string.sub(head, 42, 42) == '"' then
  token = string.sub(head, 10, 41)
elseif head ~= '' then
  token = redis.sha1hex(redis.call('GET', KEYS[1]))
end
if token ~= ARGV[1] then return {0, redis.call('GET', KEYS[1])} end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return {1}
"""


class RedisStorageAdapter(DictView):
    """Readable primary on Redis; implements the seed Protocol and ``AtomicStore``."""

    name = "redis"

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: Redis | None = None,
        ttl_s: int | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        retries: int = 2,
        max_connections: int = 64,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff
        except ImportError as exc:
            raise MissingDependencyError("RedisStorageAdapter", "redis") from exc
        if (redis_url is None) == (client is None):
            raise ConfigurationError("RedisStorageAdapter needs exactly one of redis_url= or client=")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError(f"ttl_s must be a positive number of seconds, got {ttl_s}")
        if client is None:
            assert redis_url is not None
            try:
                pool = aioredis.ConnectionPool.from_url(
                    redis_url,
                    max_connections=max_connections,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=connect_timeout,
                    retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries),
                )
            except ValueError as exc:
                raise ConfigurationError(f"bad redis_url: {exc}") from exc
            client = aioredis.Redis(connection_pool=pool)
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis: Redis = client
        self._ttl_s = ttl_s
        self._swap = client.register_script(_SWAP_SCRIPT)
        pool_size = getattr(getattr(client, "connection_pool", None), "max_connections", None)
        self._in_flight = asyncio.Semaphore(pool_size or max_connections)
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)

    def describe(self) -> dict[str, str | int]:
        """Span attributes naming the server, per the OpenTelemetry database conventions."""
        pool = getattr(self._redis, "connection_pool", None)
        if pool is None:  # a cluster client: each command's node is its own
            return {"db.system.name": "redis"}
        kwargs = pool.connection_kwargs
        attributes: dict[str, str | int] = {
            "db.system.name": "redis",
            "db.namespace": str(kwargs.get("db", 0)),
        }
        if "path" in kwargs:
            attributes["server.address"] = str(kwargs["path"])
        else:
            attributes["server.address"] = str(kwargs.get("host", "localhost"))
            attributes["server.port"] = int(kwargs.get("port", 6379))
        return attributes

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            async with self._in_flight:
                return await command()
        except self._errors as exc:
            if "WRONGTYPE" in str(exc):
                raise UnreadableDocumentError("key holds a non-string Redis value") from exc
            raise StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def _get(self, key: str) -> bytes | None:
        # The client is built without decode_responses, so replies are bytes.
        return cast("bytes | None", await self._call(lambda: self._redis.get(key)))

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        raw = await self._get(user_state_key(product_id, user_id))
        return None if raw is None else Stored(raw, token_of(raw))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        key = user_state_key(product_id, user_id)
        args: list[bytes | str] = [expected or "", raw, str(self._ttl_s or 0)]
        reply: list[Any] = await self._call(lambda: self._swap(keys=[key], args=args))
        if reply[0] == 1:
            return True, None
        current = reply[1] if len(reply) > 1 else None
        return False, None if current is None else Stored(current, token_of(current))

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        key = session_key(product_id, user_id, session_id)
        created = await self._call(lambda: self._redis.set(key, raw, nx=True, ex=self._ttl_s))
        return bool(created)

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        return await self._get(session_key(product_id, user_id, session_id))

    async def _put_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        key = user_state_key(product_id, user_id)
        await self._call(lambda: self._redis.set(key, raw, ex=self._ttl_s))

    async def aclose(self) -> None:
        """Close the connection pool this adapter created (an injected client is yours)."""
        if self._owns_client:
            await self._redis.aclose()
