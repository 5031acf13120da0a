"""The Redis primary.

Decisions:
- Snapshots: ``SET key doc NX`` -- write-once, and the reply says whether this
  call created the record or found it there.
- User state: compare-and-set in one server-side script. The token is the
  revision at the document's head, read with ``GETRANGE``; a document written
  by the reference package or by hand carries none and is compared by the
  SHA-1 of its bytes (``redis.sha1hex``), still exactly. A conflict returns the
  current document in the same round trip.
- Every command touches one key, so the adapter runs unchanged on Redis Cluster.
- Timeouts and retries are short by default (a session start must not hang on
  a dead server); pass your own client for anything else.
- Commands are auto-pipelined (``_autopipeline``): at most ``pipelines``
  are in flight, each on its own connection, and commands arriving meanwhile
  go out together as the next one. Four is enough to keep a local server
  busy: batching, not connections, is what scales (measured with
  ``benchmarks/lifecycle.py``: 64 in flight did a third less work per second).
  A session end's snapshot and state writes share one round trip (on a
  Cluster, the snapshot goes first on its own), and the caller's own work can
  run while the server answers (``swap_state_with``).
- redis-py errors are mapped once, here, to ``StorageUnavailableError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from autoplay_obs.errors import (
    AutoplayError,
    ConfigurationError,
    MissingDependencyError,
    StorageUnavailableError,
    UnreadableDocumentError,
)
from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._protocol import Stored, token_of
from autoplay_obs.storage.adapters._autopipeline import AutoPipeline, Command, Replies
from autoplay_obs.storage.adapters._dict_view import DictView

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStorageAdapter"]

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
    """Readable primary on Redis; implements the seed Protocol and ``AtomicStore``.

    ``pipelines`` connections are checked out of the pool on first use and kept
    until ``aclose()``; an injected client lends them for that long.
    """

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
        pipelines: int = 4,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff
        except ImportError as exc:
            raise MissingDependencyError("RedisStorageAdapter", "redis") from exc
        if (redis_url is None) == (client is None):
            raise ConfigurationError("RedisStorageAdapter needs exactly one of redis_url= or client=")
        if pipelines < 1:
            raise ConfigurationError(f"pipelines must be at least 1, got {pipelines}")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError(f"ttl_s must be a positive number of seconds, got {ttl_s}")
        if client is None:
            assert redis_url is not None
            try:
                pool = aioredis.ConnectionPool.from_url(
                    redis_url,
                    max_connections=pipelines,
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
        self._expiry: tuple[str | int, ...] = () if ttl_s is None else ("EX", ttl_s)
        pool_size = getattr(getattr(client, "connection_pool", None), "max_connections", None)
        self._pipeline = AutoPipeline(client, min(pipelines, pool_size or pipelines))
        # Not a Cluster: one round trip is one connection, so it keeps its commands' order.
        self._one_connection = getattr(client, "connection_pool", None) is not None
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

    def _error(self, exc: BaseException) -> AutoplayError:
        if "WRONGTYPE" in str(exc):
            return UnreadableDocumentError("key holds a non-string Redis value")
        return StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}")

    async def _call(self, *commands: Command, while_waiting: Callable[[], object] | None = None) -> Replies:
        """The commands' replies, each error mapped to ours (raised when it is the connection's)."""
        try:
            replies = await self._pipeline.call(*commands, while_waiting=while_waiting)
        except self._errors as exc:
            raise self._error(exc) from exc
        mapped = Replies(self._error(r) if isinstance(r, self._errors) else r for r in replies)
        mapped.resent = replies.resent
        return mapped

    async def _one(self, command: Command) -> Any:
        (reply,) = await self._call(command)
        if isinstance(reply, AutoplayError):
            raise reply
        return reply

    async def _get(self, key: str) -> bytes | None:
        # The client is built without decode_responses, so replies are bytes.
        return cast("bytes | None", await self._one(("GET", key)))

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        raw = await self._get(user_state_key(product_id, user_id))
        return None if raw is None else Stored(raw, token_of(raw))

    def _swap(self, product_id: str, user_id: str, raw: bytes, expected: str | None) -> Command:
        key = user_state_key(product_id, user_id)
        args = (expected or "", raw, str(self._ttl_s or 0))
        # EVAL, not EVALSHA: the server caches the compiled script by its hash either
        # way, and a pipeline then never meets NOSCRIPT (after a restart or a flush).
        return ("EVAL", _SWAP_SCRIPT, 1, key, *args)

    @staticmethod
    def _swapped(reply: Any) -> tuple[bool, Stored | None]:
        if reply[0] == 1:
            return True, None
        current = reply[1] if len(reply) > 1 else None
        return False, None if current is None else Stored(current, token_of(current))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        return self._swapped(await self._one(self._swap(product_id, user_id, raw, expected)))

    def _freeze(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> Command:
        return ("SET", session_key(product_id, user_id, session_id), raw, "NX", *self._expiry)

    async def _created(
        self, reply: Any, resent: bool, product_id: str, user_id: str, snapshot: tuple[str, bytes]
    ) -> bool | AutoplayError:
        """Whether ``SET NX`` stored the snapshot. After a lost reply its command went out
        twice and the second found the first one's work: the stored bytes tell."""
        if isinstance(reply, AutoplayError):
            return reply
        if reply is not None or not resent:
            return reply is not None
        try:
            return await self._get(session_key(product_id, user_id, snapshot[0])) == snapshot[1]
        except AutoplayError as exc:
            return exc

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        replies = await self._call(self._freeze(product_id, user_id, session_id, raw))
        created = await self._created(replies[0], replies.resent, product_id, user_id, (session_id, raw))
        if isinstance(created, AutoplayError):
            raise created
        return created

    async def swap_state_with(
        self,
        product_id: str,
        user_id: str,
        raw: bytes,
        expected: str | None,
        *,
        snapshot: tuple[str, bytes] | None = None,
        while_waiting: Callable[[], object] | None = None,
    ) -> tuple[bool | AutoplayError | None, tuple[bool, Stored | None] | AutoplayError]:
        """``swap_state``, after a ``create_snapshot`` of ``snapshot`` (session id, bytes) in the
        same round trip, running ``while_waiting`` while the server works.

        Returns whether the snapshot was created (None without one) and the swap's
        result; each part's own error comes back in its place, a connection error raises.
        """
        swap = self._swap(product_id, user_id, raw, expected)
        if snapshot is None:
            (swapped,) = await self._call(swap, while_waiting=while_waiting)
            return None, swapped if isinstance(swapped, AutoplayError) else self._swapped(swapped)
        freeze = self._freeze(product_id, user_id, *snapshot)
        if self._one_connection:
            replies = await self._call(freeze, swap, while_waiting=while_waiting)
            frozen, swapped = replies
        else:  # a Cluster sends each node's part at once: the snapshot must go first, alone
            replies = await self._call(freeze)
            frozen, (swapped,) = replies[0], await self._call(swap, while_waiting=while_waiting)
        created = await self._created(frozen, replies.resent, product_id, user_id, snapshot)
        return created, swapped if isinstance(swapped, AutoplayError) else self._swapped(swapped)

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        return await self._get(session_key(product_id, user_id, session_id))

    async def _put_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        await self._one(("SET", user_state_key(product_id, user_id), raw, *self._expiry))

    async def aclose(self) -> None:
        """Close the connection pool this adapter created (an injected client is yours)."""
        await self._pipeline.aclose()
        if self._owns_client:
            await self._redis.aclose()
