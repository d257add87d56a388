"""The pool in front of several model servers: one request per server, whoever gives up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from steadyflow.providers import llama_pool
from steadyflow.providers.local_server import RunServer, answers
from tests.conftest import host_children, wait_gone

MODELS = b'{"object": "list", "data": [{"id": "local", "object": "model"}]}'


class Upstream:
    """A stand-in for one llama-cpp-python server: answers after a pause, counts requests in flight."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.in_flight = 0
        self.most = 0
        self.served = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.pause_s)
            self.served += 1
            return web.json_response({"echo": await request.json(), "path": request.path_qs})
        finally:
            self.in_flight -= 1


async def _site(application: web.Application) -> tuple[web.AppRunner, str]:
    # handler_cancellation: a caller that disconnects cancels its handler (aiohttp's default is not
    # to), the harshest case for the pool's bookkeeping
    runner = web.AppRunner(application, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _with_pool(upstreams: list[Upstream], body: object) -> None:
    runners = []
    urls = []
    for upstream in upstreams:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", upstream.handle)
        runner, url = await _site(application)
        runners.append(runner)
        urls.append(url)
    pool_runner, pool_url = await _site(llama_pool.app(urls, MODELS))
    try:
        await body(pool_url)  # type: ignore[operator]
    finally:
        for runner in [pool_runner, *runners]:
            await runner.cleanup()


def test_each_server_gets_one_request_at_a_time_and_all_are_used() -> None:
    upstreams = [Upstream(0.2), Upstream(0.2)]

    async def body(url: str) -> None:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> dict[str, object]:
                async with session.post(f"{url}/v1/chat/completions?x={i}", json={"n": i}) as answer:
                    assert answer.status == 200
                    return dict(await answer.json())

            answers_ = await asyncio.gather(*(one(i) for i in range(6)))
        assert [a["echo"] for a in answers_] == [{"n": i} for i in range(6)]
        assert {a["path"] for a in answers_} == {f"/v1/chat/completions?x={i}" for i in range(6)}

    asyncio.run(_with_pool(upstreams, body))
    assert [u.most for u in upstreams] == [1, 1]
    assert [u.served for u in upstreams] == [3, 3]


def test_a_caller_that_gives_up_does_not_free_a_busy_server() -> None:
    upstreams = [Upstream(0.5)]

    async def body(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(url, json={}, timeout=aiohttp.ClientTimeout(total=0.2)):
                    pass
            async with session.post(url, json={"after": True}) as answer:
                assert (await answer.json())["echo"] == {"after": True}

    asyncio.run(_with_pool(upstreams, body))
    assert upstreams[0].most == 1 and upstreams[0].served == 2


def test_a_liveness_probe_is_answered_while_every_server_computes() -> None:
    # llama-cpp-python answers GET /v1/models only between completions: the pool answers it itself
    upstreams = [Upstream(1.0)]

    async def body(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            busy = asyncio.ensure_future(session.post(f"{url}/v1/chat/completions", json={}))
            await asyncio.sleep(0.2)
            async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=0.5)) as answer:
                assert answer.status == 200 and await answer.read() == MODELS
            (await busy).release()

    asyncio.run(_with_pool(upstreams, body))
    assert upstreams[0].served == 1  # the probe never reached the busy server


@pytest.mark.slow
def test_a_pool_of_real_servers_answers_and_ends_with_a_killed_run(local_gguf: Path, tmp_path: Path) -> None:
    # The run is a child process killed with SIGKILL: nothing of it may survive, servers included.
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from steadyflow.providers.local_server import RunServer\n"
        f"with RunServer(Path({str(local_gguf)!r}), 1024, servers=2) as server:\n"
        "    print(server.base_url, flush=True)\n"
        "    time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert run.stdout is not None
        url = run.stdout.readline().strip()
        assert answers(url)
        [pool] = host_children(run.pid)
        workers = host_children(pool)
        assert len(workers) == 2
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert all(wait_gone(pid, 20) for pid in [pool, *workers])
    assert not answers(url, 1)


@contextlib.contextmanager
def _pool_of_two(local_gguf: Path) -> Iterator[tuple[RunServer, int, list[int]]]:
    """A run's pool of two servers: the server, the pool's pid and its servers' pids."""
    before = set(host_children(os.getpid()))
    with RunServer(local_gguf, 1024, servers=2) as server:
        [pool] = set(host_children(os.getpid())) - before
        workers = host_children(pool)
        assert len(workers) == 2
        yield server, pool, workers


@pytest.mark.slow
def test_a_run_s_pool_stops_with_the_run(local_gguf: Path) -> None:
    with _pool_of_two(local_gguf) as (server, pool, workers):
        assert answers(server.base_url)
    assert all(wait_gone(pid, 20) for pid in [pool, *workers])


def test_a_local_client_sends_as_many_requests_as_there_are_servers() -> None:
    from steadyflow.providers.local_server import cores
    from steadyflow.providers.openai_compat import LocalClient
    from steadyflow.spec.models import ModelSpec

    started = LocalClient("s", ModelSpec(provider="local"), 8, "http://127.0.0.1:9/v1")
    assert started.slots == min(2, cores())  # the run's own servers
    assert LocalClient("s", ModelSpec(provider="local", servers=3), 8, "http://127.0.0.1:9/v1").slots == 3
    users = ModelSpec(provider="local", base_url="http://127.0.0.1:9/v1")
    assert LocalClient("s", users, 8).slots == 1  # a server of the user's: one at a time unless told
    assert LocalClient("s", users.model_copy(update={"servers": 4}), 8).slots == 4
    assert LocalClient("s", ModelSpec(provider="local", servers=4), 2, "http://127.0.0.1:9/v1").slots == 2


@pytest.mark.slow
def test_a_pool_that_loses_a_server_stops_rather_than_half_answering(local_gguf: Path) -> None:
    with _pool_of_two(local_gguf) as (server, pool, workers):
        os.kill(workers[0], signal.SIGKILL)
        assert all(wait_gone(pid, 20) for pid in [pool, *workers])
        assert not answers(server.base_url, 1)
