"""Auto-pipelining: Redis commands that would wait for a connection share one round trip.

Why: a command sent alone through redis-py's client costs about a tenth of a
millisecond of Python (pool checkout and release, its instrumentation,
packing, the event-loop turns of a read) -- as much as the decoding of a 30 KB
document. Two measures, both measured with ``benchmarks/lifecycle.py``:

- Connections are checked out of the pool once and kept (at most ``limit``),
  so a round trip is a packed write and the reads of its replies.
- A caller finding a connection free sends at once, from its own task. While
  all are busy, new calls wait together and go out as one pipeline (up to
  ``MAX_BATCH_BYTES``) when a connection frees up: load makes batches bigger
  rather than queues longer.

The commands of one ``call`` go out together and in order, and Redis runs a
connection's commands in order: a session end's snapshot write lands before
its state write, in one round trip. Replies come back per command, a
command's own error (``WRONGTYPE``, say) as an exception in its place; a
connection error fails the round trip, which the connection's retry policy
may repeat, as redis-py does for its own pipelines. A call's commands are
packed by the caller, so one that cannot be sent fails that call alone.

A Redis Cluster client has no single pool (each key has its node), so there
every round trip is one of its own non-transactional pipelines; it sends each
node's commands concurrently, so it does not keep the order of one call's
commands on different nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

__all__ = ["MAX_BATCH_BYTES", "AutoPipeline", "Command", "Replies"]

Command = tuple[Any, ...]
"""One command's arguments, e.g. ``("GET", key)``."""
Hook = Callable[[], object]

MAX_BATCH_BYTES: Final = 1 << 20
"""A waiting batch larger than this goes out over several round trips: one write must
fit well within the socket timeout even on a slow link."""


class Replies(list[Any]):
    """One call's replies, in order."""

    resent = False
    """Its round trip went out again after a connection error: a reply to the first
    sending may be lost, so a command that is not idempotent may have run twice."""


class _Call:
    """One caller's commands, packed, and where its replies go."""

    __slots__ = ("commands", "hook", "hook_error", "packed", "reply", "sends", "size")

    def __init__(self, commands: tuple[Command, ...], packed: list[bytes], hook: Hook | None) -> None:
        self.commands = commands
        self.packed = packed
        self.size = sum(map(len, packed))
        self.hook = hook
        self.hook_error: Exception | None = None
        self.reply: asyncio.Future[Replies] | None = None
        self.sends = 0

    def replies(self, all_replies: list[Any], start: int) -> Replies:
        mine = Replies(all_replies[start : start + len(self.commands)])
        mine.resent = self.sends > 1
        return mine

    def run_hook(self) -> None:
        """The caller's work while the server answers: once, and never into the round trip."""
        hook, self.hook = self.hook, None
        if hook is not None:
            try:
                hook()
            except Exception as exc:
                self.hook_error = exc


class AutoPipeline:
    """At most ``limit`` round trips in flight; calls arriving meanwhile wait as one batch."""

    def __init__(self, client: Any, limit: int) -> None:
        from redis.exceptions import ResponseError

        self._client = client
        self._pool: Any = getattr(client, "connection_pool", None)
        # Packs commands as the pool's connections would; never connects, never counted.
        self._packer = (
            None if self._pool is None else self._pool.connection_class(**self._pool.connection_kwargs)
        )
        self.limit = limit
        self._reply_error = ResponseError
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: list[Any] = []  # every connection checked out of the pool and kept
        self._idle: list[Any] = []
        self._busy = 0
        self._waiting: list[_Call] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(self, *commands: Command, while_waiting: Hook | None = None) -> Replies:
        """The replies to ``commands`` (an exception in place of a command that failed).

        ``while_waiting`` runs once the commands are sent, while the server works
        on them: CPU work that would otherwise follow the reply. If it raises,
        the call raises that, after its replies are read.
        """
        if self._loop is not asyncio.get_running_loop():
            await self._adopt_loop()
        packed = [] if self._packer is None else self._packer.pack_commands(commands)
        this = _Call(commands, packed, while_waiting)
        if self._busy < self.limit:
            self._busy += 1
            try:
                replies = await self._round_trip([this])
            finally:
                self._release()
            if this.hook_error is not None:
                raise this.hook_error
            return this.replies(replies, 0)
        this.reply = asyncio.get_running_loop().create_future()
        self._waiting.append(this)
        return await this.reply

    async def _adopt_loop(self) -> None:
        """Connections and waiting calls belong to one event loop: a new one starts afresh."""
        ended, self._loop = self._loop, asyncio.get_running_loop()
        if ended is None:
            return
        # That loop ended, maybe mid-call: give back what it held (its calls are gone with it).
        stale, self._held, self._idle = self._held, [], []
        self._busy, self._waiting = 0, []
        for conn in stale:
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def _round_trip(self, calls: list[_Call]) -> list[Any]:
        if self._pool is None:
            pipe = self._client.pipeline(transaction=False)
            for each in calls:
                for command in each.commands:
                    pipe.execute_command(*command)
            try:
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            finally:
                for each in calls:
                    each.run_hook()
            return replies
        if self._idle:
            conn = self._idle.pop()
        else:
            conn = await self._pool.get_connection()
            self._held.append(conn)
        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: self._exchange(conn, calls), lambda _: conn.disconnect()
            )
        finally:
            if conn not in self._held:  # its loop ended meanwhile: already given back
                pass
            elif self._closed:  # closed meanwhile: nothing is kept any more
                self._held.remove(conn)
                await self._pool.release(conn)
            else:
                self._idle.append(conn)

    async def _exchange(self, conn: Any, calls: list[_Call]) -> list[Any]:
        for each in calls:
            each.sends += 1
        await conn.send_packed_command([chunk for each in calls for chunk in each.packed])
        for each in calls:
            each.run_hook()
        replies: list[Any] = []
        for _ in range(sum(len(each.commands) for each in calls)):  # all read: the connection stays in step
            try:
                replies.append(await conn.read_response())
            except self._reply_error as exc:
                replies.append(exc)
        return replies

    def _release(self) -> None:
        self._busy -= 1
        while self._waiting and self._busy < self.limit:
            batch: list[_Call] = []
            size = 0
            while self._waiting and (not batch or size + self._waiting[0].size <= MAX_BATCH_BYTES):
                batch.append(self._waiting.pop(0))
                size += batch[-1].size
            sender = asyncio.get_running_loop().create_task(self._send(batch))
            self._busy += 1
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._round_trip(batch)
        except Exception as exc:  # the connection failed: so did every command on it
            for each in batch:
                if each.reply is not None and not each.reply.done():
                    each.reply.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for each in batch:
                if each.reply is not None:
                    each.reply.cancel()
            raise
        finally:
            self._release()
        start = 0
        for each in batch:
            if each.reply is not None and not each.reply.done():  # else its caller was cancelled
                if each.hook_error is not None:
                    each.reply.set_exception(each.hook_error)
                else:
                    each.reply.set_result(each.replies(replies, start))
            start += len(each.commands)

    async def aclose(self) -> None:
        """Give the kept connections back to the pool (which closes them when it closes).

        Round trips still in flight give theirs back when they finish.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._held.remove(conn)
            await self._pool.release(conn)
