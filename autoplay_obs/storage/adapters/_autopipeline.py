"""Auto-pipelining: Redis commands that would wait for a connection share one round trip.

Why: a command sent alone through redis-py's client costs about a tenth of a
millisecond of Python (pool checkout and release, its instrumentation,
packing, the event-loop turns of a read) -- as much as the decoding of a 30 KB
document. Two measures, both measured with ``benchmarks/lifecycle.py``:

- Connections are checked out of the pool once and kept (at most ``limit``),
  so a round trip is a packed write and the reads of its replies.
- A caller finding a connection free sends at once, from its own task. While
  all are busy, new commands join one waiting batch, sent as a single
  pipeline when a connection frees up: load makes batches bigger rather than
  queues longer.

The commands of one ``call`` go out together and in order, and Redis runs a
connection's commands in order: a session end's snapshot write lands before
its state write, in one round trip. Replies come back per command, a
command's own error (``WRONGTYPE``, say) as an exception in its place; a
connection error fails the round trip, which the connection's retry policy
may repeat, as redis-py does for its own pipelines.

A Redis Cluster client has no single pool (each key has its node), so there
every round trip is one of its own non-transactional pipelines instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["AutoPipeline", "Command"]

Command = tuple[Any, ...]
"""One command's arguments, e.g. ``("GET", key)``."""

Hook = Callable[[], object]
_Waiting = tuple[tuple[Command, ...], "Hook | None", "asyncio.Future[list[Any]]"]


class AutoPipeline:
    """At most ``limit`` round trips in flight; whatever arrives meanwhile waits as one batch."""

    def __init__(self, client: Any, limit: int) -> None:
        from redis.exceptions import ResponseError

        self._client = client
        self._pool: Any = getattr(client, "connection_pool", None)
        self.limit = limit
        self._reply_error = ResponseError
        self._idle: list[Any] = []  # connections checked out of the pool and kept
        self._busy = 0
        self._waiting: list[_Waiting] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(self, *commands: Command, while_waiting: Hook | None = None) -> list[Any]:
        """The replies to ``commands`` (an exception in place of a command that failed).

        ``while_waiting`` runs once the commands are sent, while the server works
        on them: CPU work that would otherwise follow the reply (it must not raise).
        """
        hooks = () if while_waiting is None else (while_waiting,)
        if self._busy < self.limit:
            self._busy += 1
            try:
                return await self._round_trip(commands, hooks)
            finally:
                self._release()
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, while_waiting, reply))
        return await reply

    async def _round_trip(self, commands: tuple[Command, ...], hooks: tuple[Hook, ...]) -> list[Any]:
        if self._pool is None:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        conn = self._idle.pop() if self._idle else await self._pool.get_connection()
        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: self._exchange(conn, commands, hooks), lambda _: conn.disconnect()
            )
        finally:
            if self._closed:  # closed meanwhile: nothing is kept any more
                await self._pool.release(conn)
            else:
                self._idle.append(conn)

    async def _exchange(self, conn: Any, commands: tuple[Command, ...], hooks: tuple[Hook, ...]) -> list[Any]:
        await conn.send_packed_command(conn.pack_commands(commands))
        for hook in hooks:
            hook()
        replies: list[Any] = []
        for _ in commands:  # every reply is read, so the connection stays in step
            try:
                replies.append(await conn.read_response())
            except self._reply_error as exc:
                replies.append(exc)
        return replies

    def _release(self) -> None:
        self._busy -= 1
        if self._waiting:
            batch, self._waiting = self._waiting, []
            self._busy += 1
            sender = asyncio.get_running_loop().create_task(self._send(batch))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            commands = tuple(c for cs, _, _ in batch for c in cs)
            replies = await self._round_trip(commands, tuple(h for _, h, _ in batch if h is not None))
        except Exception as exc:  # the connection failed: so did every command on it
            for _, _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for _, _, reply in batch:
                reply.cancel()
            raise
        finally:
            self._release()
        start = 0
        for cs, _, reply in batch:
            if not reply.done():  # else its caller was cancelled
                reply.set_result(replies[start : start + len(cs)])
            start += len(cs)

    async def aclose(self) -> None:
        """Give the kept connections back to the pool (which closes them when it closes).

        Round trips still in flight give theirs back when they finish.
        """
        self._closed = True
        held, self._idle = self._idle, []
        for conn in held:
            await self._pool.release(conn)
