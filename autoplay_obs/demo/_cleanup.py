"""The keys a demo run wrote to a user's Redis: counted, and deleted with ``--cleanup``.

Decisions:

- Found with ``SCAN`` and a ``MATCH`` on the run's own product id, its glob
  characters escaped, so nothing outside ``autoplay:user:<product>:`` can
  match (the key scheme never lets an encoded id hold ``:``, so another
  product whose id starts with ours cannot match either).
- Deleted with ``UNLINK`` one key per command in a non-transactional
  pipeline: every command touches one key, as everywhere in this library.
- A plain redis-py client of its own: the storage adapters have no "delete"
  in their contract, and the demo must not add one.
"""

from __future__ import annotations

import re
from typing import Any

from autoplay_obs.errors import MissingDependencyError
from autoplay_obs.storage._keys import encode_id, validate_id

__all__ = ["count_keys", "glob_escape", "key_pattern", "remove_keys", "shell_command"]

_GLOB = re.compile(r"([*?\[\]\\])")
_BATCH = 500


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis ``MATCH`` pattern."""
    return _GLOB.sub(r"\\\1", text)


def key_pattern(product_id: str) -> str:
    """The ``MATCH`` pattern of every key of ``product_id`` and of nothing else."""
    return f"autoplay:user:{glob_escape(encode_id(validate_id(product_id, 'product_id')))}:*"


def _client(redis_url: str) -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:  # the run itself needed it: only an odd install gets here
        raise MissingDependencyError("--cleanup", "redis") from exc
    return redis.asyncio.Redis.from_url(redis_url)


async def count_keys(redis_url: str, product_id: str) -> int:
    client = _client(redis_url)
    try:
        return sum([1 async for _ in client.scan_iter(match=key_pattern(product_id), count=_BATCH)])
    finally:
        await client.aclose()


async def remove_keys(redis_url: str, product_id: str) -> int:
    """Delete every key of ``product_id``; returns how many were deleted."""
    client = _client(redis_url)
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=key_pattern(product_id), count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                removed += await _unlink(client, batch)
                batch = []
        removed += await _unlink(client, batch)
    finally:
        await client.aclose()
    return removed


async def _unlink(client: Any, keys: list[bytes]) -> int:
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(n) for n in await pipe.execute())


def shell_command(redis_url: str, product_id: str) -> str:
    """The same deletion for a shell, for the closing line of a run without ``--cleanup``."""
    pattern = key_pattern(product_id).replace("'", "'\\''")
    return f"redis-cli -u {redis_url} --scan --pattern '{pattern}' | xargs -r redis-cli -u {redis_url} unlink"
