"""Several single-thread model servers behind one loopback port, each request to a free one.

llama-cpp-python's server computes one completion at a time. On two cores, two servers of one
thread each answer more documents per second than one server of two threads (the threads of one
small model wait on each other for every token; two models do not), at the memory of a second copy
of the model. ``llama_host --workers N`` starts N hosts on ports of their own (each watching the
pool's pipe, so they end with it) and forwards every request to one that is not busy; a request
that finds every server busy waits in the pool, not inside a server. The pool ends when any of its
servers does, and they end with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",  # aiohttp hands over the body decoded
    "host",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


def start_workers(argv: list[str], workers: int, threads: int) -> list[tuple[subprocess.Popen[bytes], str]]:
    """Start ``workers`` hosts with ``argv`` (the pool's arguments but port, threads, workers); wait for them.

    They write to the pool's own output (where the run's log is) and end when the pool's process does.
    """
    from steadyflow.providers.local_server import _stop, _wait_ready, free_port

    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(workers):
            port = free_port()
            cmd = [sys.executable, "-m", "steadyflow.providers.llama_host", *argv]
            cmd += ["--port", str(port), "--threads", str(threads), "--watch-stdin"]
            started.append((subprocess.Popen(cmd, stdin=subprocess.PIPE), f"http://127.0.0.1:{port}"))
        for proc, url in started:
            _wait_ready(proc, f"{url}/v1", Path(os.devnull))
    except BaseException:
        for proc, _ in started:
            _stop(proc)
        raise
    return started


def app(upstreams: list[str], models: bytes, timeout_s: float = 3600.0) -> web.Application:
    """An application forwarding every request to a free upstream (``http://127.0.0.1:PORT``).

    ``GET /v1/models`` is answered from ``models`` (the list the first server gave at start):
    llama-cpp-python answers it only between completions, and a liveness probe that waits behind
    a completion takes a busy pool for a dead one.
    """
    free: asyncio.Queue[str] = asyncio.Queue()
    for url in upstreams:
        free.put_nowait(url)
    session_key = web.AppKey("session", ClientSession)

    async def session(application: web.Application) -> AsyncIterator[None]:
        # kept-alive connections closed before uvicorn's 5 s would close them under a request
        connector = TCPConnector(keepalive_timeout=4)
        async with ClientSession(timeout=ClientTimeout(total=timeout_s), connector=connector) as opened:
            application[session_key] = opened
            yield

    async def model_list(_: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    async def forward(request: web.Request) -> web.Response:
        client = request.app[session_key]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        upstream = await free.get()

        async def exchange() -> web.Response:
            url = upstream + request.path_qs
            try:
                async with client.request(request.method, url, data=body, headers=headers) as answer:
                    payload = await answer.read()
                    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
                    return web.Response(status=answer.status, body=payload, headers=kept)
            except ClientError as exc:  # the server went away: the watchdog is about to end the pool
                return web.json_response({"error": {"message": f"model server gone: {type(exc).__name__}"}}, status=502)
            finally:
                free.put_nowait(upstream)

        # shielded: a caller that gives up does not free a server that is still computing its answer
        return await asyncio.shield(asyncio.ensure_future(exchange()))

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_get("/v1/models", model_list)
    application.router.add_route("*", "/{tail:.*}", forward)
    application.cleanup_ctx.append(session)
    return application


def _exit_when_a_worker_does(started: list[tuple[subprocess.Popen[bytes], str]], stopping: threading.Event) -> None:
    # A pool that lost a server would send every other request to a closed port; ending the pool
    # instead is what a run already handles (the server is gone: its model rung fails over).
    while all(proc.poll() is None for proc, _ in started):
        if stopping.wait(0.5):
            return  # the pool is stopping them itself
    if stopping.is_set():
        return
    print("a model server of the pool exited; stopping the pool", file=sys.stderr, flush=True)
    os._exit(3)  # the other servers see their pipe close and exit too


def serve(argv: list[str], host: str, port: int, workers: int, threads: int) -> None:
    """Run the pool until the process is stopped; the workers end with it, and it with any of them."""
    # the port is taken before the servers load (seconds), so nothing else can take it meanwhile
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    started = start_workers(argv, workers, threads)
    with urllib.request.urlopen(f"{started[0][1]}/v1/models", timeout=30) as answer:
        models = answer.read()
    stopping = threading.Event()
    watch = threading.Thread(target=_exit_when_a_worker_does, args=(started, stopping), daemon=True)
    watch.start()
    try:
        web.run_app(app([url for _, url in started], models), sock=listener, print=None, handle_signals=True)
    finally:
        from steadyflow.providers.local_server import _stop

        stopping.set()
        for proc, _ in started:
            with contextlib.suppress(OSError):
                _stop(proc)
