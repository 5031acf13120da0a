"""The Redis primary, standalone or Redis Cluster, on redis-py's public API.

Decisions:
- Snapshots: ``SET key doc NX`` -- write-once, and the reply says whether this
  call created the record or found it there.
- User state: compare-and-set in one server-side script, registered with
  ``register_script`` (EVALSHA, loaded again on NOSCRIPT). The token is the
  revision at the document's head, read with ``GETRANGE``; a document written
  by the reference package or by hand carries none and is compared by the
  SHA-1 of its bytes (``redis.sha1hex``), still exactly. A conflict returns the
  current document in the same reply.
- Both documents written here start with a random ``_rev``, so after redis-py
  resends a command whose reply was lost, the stored head tells whether the
  write that landed is ours: a resent compare-and-set sees its own revision,
  a resent ``SET NX`` finds its own head (``GETRANGE``, 42 bytes).
- Every command touches one key, so the adapter runs unchanged on Redis
  Cluster; nothing assumes a user's keys share a node. On a standalone server
  a session end's snapshot and first compare-and-set travel in one
  non-transactional pipeline (one round trip, snapshot first); a Cluster
  pipeline sends to several nodes at once, so there the snapshot goes first.
- ``wait_replicas=N`` makes each write wait (``WAIT``) until N replicas hold
  it; a write they do not confirm in ``wait_timeout`` is reported as failed,
  since a failover could lose it.
- redis-py errors are mapped once, here, to the library's own.
- An erased user's state is a tombstone (``_tombstone``): the compare-and-set
  script refuses to write over it (reply ``{2}``) and ``load_state`` refuses
  to read it, both as ``UserErasedError``. Retention, scans and deletes:
  ``_redis_ops``.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING, Any, cast

from autoplay_obs.errors import (
    AutoplayError,
    ConfigurationError,
    MissingDependencyError,
    StorageUnavailableError,
    UnreadableDocumentError,
    UserErasedError,
)
from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._loop import LoopBinding
from autoplay_obs.storage._protocol import REVISION_END, REVISION_PREFIX, Stored, token_of
from autoplay_obs.storage._tombstone import erased_at, is_tombstone
from autoplay_obs.storage.adapters._dict_view import DictView
from autoplay_obs.storage.adapters._redis_ops import RedisOperatorOps, snapshot_expiry

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisStorageAdapter"]

# KEYS[1] state key; ARGV[1] expected token ('' = no document); ARGV[2] new
# document; ARGV[3] TTL seconds ('0' = none). {1} on success, {0, current} on
# a conflict ({0} when the key is absent), {2} on an erasure tombstone. The
# token is read from the document's first 42 bytes when it starts with our
# revision, so the document itself never enters Lua on the common path (see
# _protocol.token_of); the next 18 bytes tell a tombstone (_tombstone.py).
_SWAP_SCRIPT = """
local head = redis.call('GETRANGE', KEYS[1], 0, 59)
local token = ''
if string.sub(head, 1, 9) == '{"_rev":"' and string.sub(head, 42, 42) == '"' then
  if string.sub(head, 43, 60) == ',"_tombstone":true' then return {2} end
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

# A write that changes nothing, so that the WAIT after it on the same connection covers
# every earlier write to the key's node (see _replicated); it never creates the key.
_TOUCH_SCRIPT = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('APPEND', KEYS[1], '') end return 1"

# The command each manager operation sends (a cache hit sends none); see describe_operation.
_COMMANDS = {
    "load_state": "GET",
    "load_snapshot": "GET",
    "get_user_state": "GET",
    "get_session_snapshot": "GET",
    "create_snapshot": "SET",
    "save_user_state": "SET",
    "save_session_snapshot": "SET",
    "swap_state": "EVALSHA",
}


class RedisStorageAdapter(RedisOperatorOps, DictView):
    """Readable primary on Redis; implements the seed Protocol, ``AtomicStore`` and ``OperatorStore``.

    ``state_ttl`` / ``snapshot_ttl``: seconds each tier lives (None: forever);
    the onboarding snapshot never expires. ``ttl_s`` is the deprecated
    single lifetime of everything, the onboarding snapshot included.
    """

    name = "redis"

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: Redis | RedisCluster | None = None,
        cluster: bool = False,
        state_ttl: int | None = None,
        snapshot_ttl: int | None = None,
        ttl_s: int | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        retries: int = 2,
        max_connections: int = 64,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.exceptions import NoScriptError, ResponseError
        except ImportError as exc:
            raise MissingDependencyError("RedisStorageAdapter", "redis") from exc
        if (redis_url is None) == (client is None):
            raise ConfigurationError("RedisStorageAdapter needs exactly one of redis_url= or client=")
        self._state_ttl, self.snapshot_ttl, self._onboarding_ttl = _lifetimes(state_ttl, snapshot_ttl, ttl_s)
        if wait_replicas < 0 or wait_timeout <= 0:
            raise ConfigurationError("wait_replicas must be >= 0 and wait_timeout > 0")
        self._owns_client = client is None
        if client is None:
            assert redis_url is not None
            retry = Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries)
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                "retry": retry,
            }
            try:
                if cluster:
                    client = aioredis.RedisCluster.from_url(redis_url, **options)
                else:  # a blocking pool: a burst waits for a connection instead of failing
                    pool = aioredis.BlockingConnectionPool.from_url(
                        redis_url, max_connections=max_connections, timeout=socket_timeout, **options
                    )
                    client = aioredis.Redis(connection_pool=pool)
            except (ValueError, aioredis.RedisError) as exc:
                raise ConfigurationError(f"bad redis_url: {exc}") from exc
        self._redis = client
        self._cluster = isinstance(client, aioredis.RedisCluster)
        # A cluster pipeline reaches the nodes in no set order: there the snapshot goes first, alone.
        self.bundles_freeze = not self._cluster
        self._swap_script = client.register_script(_SWAP_SCRIPT)
        self._wait = (wait_replicas, int(wait_timeout * 1000))
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        self._noscript: type[BaseException] = NoScriptError
        self._response_error: type[BaseException] = ResponseError
        self._loop = LoopBinding("RedisStorageAdapter", strict=True)
        # A Cluster client: learn the slots once before the first command (concurrent first
        # commands race in redis-py 8.1's lazy start), and cap the commands in flight, since
        # its per-node pools refuse rather than wait past their size.
        self._started = False
        self._starting = asyncio.Lock()
        self._gate = asyncio.Semaphore(max_connections)

    def describe(self) -> dict[str, str | int]:
        """Span attributes naming the server, per the OpenTelemetry database conventions."""
        pool = getattr(self._redis, "connection_pool", None)
        if self._cluster or pool is None:  # each command's node is its own
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

    def describe_operation(self, operation: str) -> dict[str, str | int]:
        """The command a manager operation sends, per the database conventions (for its span)."""
        if operation == "freeze_and_swap":  # SET NX then EVALSHA, one non-transactional pipeline
            return {"db.operation.name": "PIPELINE", "db.operation.batch.size": 2}
        command = _COMMANDS.get(operation)
        return {} if command is None else {"db.operation.name": command}

    def describe_error(self, exc: BaseException) -> str | None:
        """The Redis error prefix (``WRONGTYPE``, ``NOSCRIPT``, ...) behind ``exc``, if a server sent one."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, self._response_error):
                prefix = str(seen).split(" ", 1)[0]
                return prefix if prefix.isupper() else None
            seen = seen.__cause__
        return None

    def _error(self, exc: BaseException) -> AutoplayError:
        if "WRONGTYPE" in str(exc):
            return UnreadableDocumentError("key holds a non-string Redis value")
        return StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}")

    async def _do(self, command: Any) -> Any:
        """Await one redis-py call, its errors mapped to ours."""
        try:
            self._loop.check()
        except ConfigurationError:
            command.close()  # never sent: not left behind as an unawaited coroutine
            raise
        try:
            if not self._cluster:
                return await command
            async with self._gate:
                if not self._started:
                    async with self._starting:
                        if not self._started:
                            await self._redis.initialize()
                            self._started = True
                return await command
        except self._errors as exc:
            raise self._error(exc) from exc

    async def _replicated(self, key: str) -> None:
        """After a write to ``key`` (by this call or an earlier one): wait until ``wait_replicas``
        replicas hold it, or fail.

        ``WAIT`` counts the writes of its own connection only, and a pool may lend another
        one; so a no-op write to the key (``APPEND key ""``) goes first on the same connection.
        Replication is one ordered stream per node, so replicas that have it have every
        earlier write to that node too -- also a write whose first ``WAIT`` timed out.
        """
        replicas, timeout_ms = self._wait
        if replicas == 0:
            return
        if self._cluster:  # one node's commands share one connection in a cluster pipeline
            node = self._redis.get_node_from_key(key)
            pipe: Any = self._redis.pipeline()
            pipe.eval(_TOUCH_SCRIPT, 1, key)
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        else:
            pipe = self._redis.pipeline(transaction=False)
            pipe.eval(_TOUCH_SCRIPT, 1, key)
            pipe.execute_command("WAIT", replicas, timeout_ms)
        _, acked = await self._do(pipe.execute(raise_on_error=False))
        if isinstance(acked, self._errors):
            raise self._error(acked)
        if int(acked) < replicas:
            raise StorageUnavailableError(f"redis: write reached {acked} of {replicas} replicas in time")

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        raw = await self._do(self._redis.get(user_state_key(product_id, user_id)))
        if raw is not None and is_tombstone(raw):
            raise UserErasedError(erased_at(raw))
        return None if raw is None else Stored(raw, token_of(raw))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        key = user_state_key(product_id, user_id)
        reply = await self._do(self._swap_script(keys=[key], args=self._swap_args(raw, expected)))
        return await self._after_swap(key, reply)

    def _swap_args(self, raw: bytes, expected: str | None) -> tuple[str | bytes, ...]:
        return (expected or "", raw, str(self._state_ttl or 0))

    async def _after_swap(self, key: str, reply: Any) -> tuple[bool, Stored | None]:
        if isinstance(reply, self._errors):
            raise self._error(reply)
        if reply[0] == 1:
            await self._replicated(key)
            return True, None
        if reply[0] == 2:
            raise UserErasedError()
        current = reply[1] if len(reply) > 1 else None
        return False, None if current is None else Stored(current, token_of(current))

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        key = session_key(product_id, user_id, session_id)
        return await self._after_freeze(
            key, await self._do(self._redis.set(key, raw, nx=True, ex=self._snapshot_ex(raw))), raw
        )

    def _snapshot_ex(self, raw: bytes) -> int | None:
        return snapshot_expiry(raw, self.snapshot_ttl, self._onboarding_ttl)

    async def _after_freeze(self, key: str, reply: Any, raw: bytes) -> bool:
        """Whether ``SET NX`` stored ``raw``: yes, or it finds its own head after a resend."""
        if isinstance(reply, self._errors):
            raise self._error(reply)
        created = reply is not None
        if not created and raw.startswith(REVISION_PREFIX):
            head = await self._do(self._redis.getrange(key, 0, REVISION_END))
            created = cast(bytes, head) == raw[: REVISION_END + 1]
        await self._replicated(key)  # found, too: it may be an earlier, unconfirmed write of ours
        return created

    async def freeze_and_swap(
        self,
        product_id: str,
        user_id: str,
        session: tuple[str, bytes],
        raw: bytes,
        expected: str | None,
    ) -> tuple[bool | AutoplayError, tuple[bool, Stored | None] | AutoplayError]:
        """``create_snapshot`` then ``swap_state`` in one round trip (standalone: ``bundles_freeze``).

        Each part's own error comes back in its place; a connection error raises.
        """
        session_id, snapshot = session
        snapshot_key = session_key(product_id, user_id, session_id)
        state_key = user_state_key(product_id, user_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(snapshot_key, snapshot, nx=True, ex=self._snapshot_ex(snapshot))
        pipe.evalsha(self._swap_script.sha, 1, state_key, *self._swap_args(raw, expected))
        frozen, swapped = await self._do(pipe.execute(raise_on_error=False))
        if isinstance(swapped, self._noscript):  # a restarted or flushed server: the script loads again
            swapped = await _settled(
                self._do(self._swap_script(keys=[state_key], args=self._swap_args(raw, expected)))
            )
        created = await _settled(self._after_freeze(snapshot_key, frozen, snapshot))
        if isinstance(swapped, AutoplayError):
            return created, swapped
        return created, await _settled(self._after_swap(state_key, swapped))

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        raw = await self._do(self._redis.get(session_key(product_id, user_id, session_id)))
        return cast("bytes | None", raw)

    async def _put_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        key = user_state_key(product_id, user_id)
        await self._do(self._redis.set(key, raw, ex=self._state_ttl))
        await self._replicated(key)

    async def aclose(self) -> None:
        """Close the client this adapter created (an injected client is yours)."""
        if self._owns_client:
            await self._redis.aclose()


def _lifetimes(
    state_ttl: int | None, snapshot_ttl: int | None, ttl_s: int | None
) -> tuple[int | None, int | None, int | None]:
    """(state, snapshot, onboarding snapshot) lifetimes; ``ttl_s`` is all three, as it always was."""
    for value, what in ((state_ttl, "state_ttl"), (snapshot_ttl, "snapshot_ttl"), (ttl_s, "ttl_s")):
        if value is not None and value <= 0:
            raise ConfigurationError(f"{what} must be a positive number of seconds, got {value}")
    if ttl_s is None:
        return state_ttl, snapshot_ttl, None
    if state_ttl is not None or snapshot_ttl is not None:
        raise ConfigurationError("ttl_s is the old name of both lifetimes: pass state_ttl/snapshot_ttl only")
    warnings.warn(
        "ttl_s expires the onboarding snapshot too; use state_ttl= and snapshot_ttl=",
        DeprecationWarning,
        stacklevel=3,
    )
    return ttl_s, ttl_s, ttl_s


async def _settled(step: Any) -> Any:
    """A step's value, or the library error it raised, in its place."""
    try:
        return await step
    except AutoplayError as exc:
        return exc
