"""The demo on a user's Redis: what it leaves is counted and removable, ``--cleanup`` removes it.

Against the suite's real ``redis-server``, with neighbours the cleanup must
not touch: another product whose id the demo's is a prefix of, one that a
glob reading of the id would match (``demo[1]`` as a pattern matches
``demo1``), and a key outside the library's scheme. The shell line the closing
message prints is run as printed (``redis-cli`` ships with redis-server).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys

import pytest
import redis

from autoplay_obs.demo import DemoConfig, run_demo

NEIGHBOURS = (
    "autoplay:user:demo1:u1:state",
    "autoplay:user:demo[1]x:u1:state",
    "autoplay:user:demo[1]x:u1:session:s1",
    "autoplay:user:xdemo[1]:u1:state",
    "other:demo[1]:thing",
)


def seed_neighbours(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    for key in NEIGHBOURS:
        client.set(key, b"{}")
    return client


def demo_keys(client: redis.Redis, product: str) -> list[bytes]:
    return [k for k in client.keys("*") if k.startswith(f"autoplay:user:{product}:".encode())]


@pytest.mark.redis_server
async def test_cleanup_removes_every_key_of_the_run_and_nothing_else(redis_url: str) -> None:
    client = seed_neighbours(redis_url)
    config = DemoConfig(sessions=60, users=6, concurrency=4, redis_url=redis_url, progress=False)
    kept = await run_demo(config)  # first without --cleanup: the keys stay, counted
    assert kept.keys_left == len(demo_keys(client, kept.product_id)) > 60
    product = "demo[1]"  # glob characters in the id
    stats = await run_demo(dataclasses.replace(config, product_id=product, cleanup=True))
    assert stats.keys_removed is not None and stats.keys_removed > 60
    assert demo_keys(client, product) == []
    assert all(client.exists(key) for key in NEIGHBOURS)
    assert len(demo_keys(client, kept.product_id)) == kept.keys_left  # the other run's keys untouched
    client.close()


@pytest.mark.redis_server
def test_the_closing_line_says_how_and_its_command_works(redis_url: str) -> None:
    client = seed_neighbours(redis_url)
    # fmt: off
    result = subprocess.run(
        [sys.executable, "-m", "autoplay_obs", "demo", "--redis-url", redis_url, "--sessions", "40",
         "--users", "5", "--no-progress"],
        capture_output=True, text=True, timeout=60,
    )
    # fmt: on
    assert result.returncode == 0, result.stderr
    match = re.search(r"this run left (\d+) keys under product id '([^']+)'", result.stdout)
    assert match is not None, result.stdout
    left, product = int(match.group(1)), match.group(2)
    assert len(demo_keys(client, product)) == left > 40
    command = result.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("redis-cli ") and "--cleanup" in result.stdout
    assert shutil.which("redis-cli"), "redis-cli comes with redis-server (Debian: redis-tools)"
    subprocess.run(command, shell=True, check=True, timeout=60)  # as a user would paste it
    assert demo_keys(client, product) == []
    assert all(client.exists(key) for key in NEIGHBOURS)
    client.close()
