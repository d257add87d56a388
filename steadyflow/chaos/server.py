"""A fault-injecting OpenAI-compatible server for loopback testing.

It answers ``POST /v1/chat/completions`` with JSON valid for the schema the
request carries (tools, ``response_format`` json_schema, or a llama.cpp-style
``json_object`` schema), or with a scripted answer, and injects faults at
given rates. It is plain asyncio so that it can also reset connections and
hang on purpose. Control routes for tests live under ``/_chaos/``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from steadyflow.chaos.values import fit, words_of, wrong_types

FAULTS = (
    "rate_limit",
    "rate_limit_no_retry_after",
    "http_500",
    "http_502",
    "http_503",
    "timeout",
    "reset",
    "malformed",
    "truncated",
    "wrong_type",
    "empty",
)
ALIASES = {"429": "rate_limit", "500": "http_500", "502": "http_502", "503": "http_503"}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class ChaosConfig:
    """Fault rates (0..1 each, summing to at most 1), latency and seed."""

    faults: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    seed: int = 0
    hang_s: float = 120.0
    retry_after_s: float = 1.0
    keep_requests: int = 10_000
    skew: dict[str, tuple[Any, float]] = field(default_factory=dict)
    """Field -> (value, share): answers give the field this value that often (a model that drifted)."""

    def __post_init__(self) -> None:
        self.faults = {ALIASES.get(k, k): v for k, v in self.faults.items()}
        unknown = sorted(set(self.faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown fault '{unknown[0]}' (known: {', '.join(FAULTS)})")
        if any(v < 0 for v in self.faults.values()) or sum(self.faults.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")


def find_schema(body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The schema a request asks for, and the tool name when it uses tools."""
    tools = body.get("tools") or []
    if tools:
        function = tools[0].get("function", {})
        return function.get("parameters", {}), function.get("name", "tool")
    fmt = body.get("response_format") or {}
    if isinstance(fmt.get("json_schema"), dict):
        return fmt["json_schema"].get("schema", {}), None
    if isinstance(fmt.get("schema"), dict):
        return fmt["schema"], None
    for message in body.get("messages", []):  # instructor's JSON mode puts it in the system prompt
        content = message.get("content")
        if isinstance(content, str) and "json_schema" in content and "{" in content:
            try:
                start = content.index("{")
                schema, _ = json.JSONDecoder().raw_decode(content[start:])
                return schema, None
            except ValueError:
                continue
    return {"type": "object", "properties": {}}, None


def _prompt_text(body: dict[str, Any]) -> str:
    parts = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return "\n".join(p for p in parts if isinstance(p, str))


class ChaosServer:
    """The server; run it with :meth:`serve_forever` or in a thread with :meth:`start`."""

    def __init__(self, config: ChaosConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or ChaosConfig()
        self.host, self.port = host, port
        self.script: deque[dict[str, Any]] = deque()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.keep_requests)
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(self.config.seed)
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:8765/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle -------------------------------------------------------------------------

    async def start_async(self) -> None:
        """Start listening in the running event loop."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        """Listen until cancelled."""
        await self.start_async()
        if self._server is not None:
            async with self._server:
                await self._server.serve_forever()

    def start(self) -> ChaosServer:
        """Run in a daemon thread; returns once the port is bound."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start_async())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="chaos-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop a server started with :meth:`start`."""
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(loop):
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    # -- HTTP ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" ", 2), "", ""][:3]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._respond(method, path.split("?")[0], body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"{extra}\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()

    async def _respond(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path in ("/health", "/v1/health"):
            await self._send(writer, 200, {"status": "ok"})
        elif method == "GET" and path == "/v1/models":
            await self._send(writer, 200, {"object": "list", "data": [{"id": "chaos", "object": "model"}]})
        elif method == "GET" and path == "/_chaos/requests":
            await self._send(writer, 200, list(self.requests))
        elif method == "GET" and path == "/_chaos/stats":
            await self._send(writer, 200, dict(self.stats))
        elif method == "POST" and path == "/_chaos/script":
            self.script.extend(json.loads(raw or b"[]"))
            await self._send(writer, 200, {"queued": len(self.script)})
        elif method == "POST" and path == "/_chaos/reset":
            self.script.clear()
            self.requests.clear()
            self.stats.clear()
            await self._send(writer, 200, {"ok": True})
        elif method == "POST" and path == "/v1/chat/completions":
            return await self._completion(raw, writer)
        else:
            await self._send(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
        return True

    def _next(self) -> dict[str, Any]:
        if self.script:
            return self.script.popleft()
        roll, acc = self._rng.random(), 0.0
        for name, rate in self.config.faults.items():
            acc += rate
            if roll < acc:
                return {"fault": name}
        return {}

    async def _completion(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        try:
            body = json.loads(raw)
        except ValueError:
            await self._send(writer, 400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return True
        self.requests.append(body)
        plan = self._next()
        fault = plan.get("fault")
        self.stats[fault or "ok"] += 1
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if fault == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if fault == "timeout":
            await asyncio.sleep(self.config.hang_s)
        if fault in ("rate_limit", "rate_limit_no_retry_after"):
            headers = {"Retry-After": f"{self.config.retry_after_s:g}"} if fault == "rate_limit" else {}
            await self._send(writer, 429, {"error": {"message": "rate limited", "type": "rate_limit_error"}}, headers)
            return True
        if fault in ("http_500", "http_502", "http_503"):
            await self._send(writer, int(fault[-3:]), {"error": {"message": "server error", "type": "server_error"}})
            return True
        await self._send(writer, 200, self._answer(body, plan))
        return True

    def _answer(self, body: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        schema, tool = find_schema(body)
        prompt = _prompt_text(body)
        rng = random.Random(f"{self.config.seed}:{prompt}")
        fault = plan.get("fault")
        finish = "tool_calls" if tool else "stop"
        if "raw" in plan:
            text = str(plan["raw"])
        elif "content" in plan:
            text = json.dumps(plan["content"])
        elif fault == "wrong_type":
            text = json.dumps(wrong_types(schema, rng, words_of(prompt)))
        else:
            answer = fit(schema, rng, words_of(prompt))
            if isinstance(answer, dict):
                for name, (value, share) in self.config.skew.items():
                    if name in answer and rng.random() < share:
                        answer[name] = value
            text = json.dumps(answer)
        if fault == "malformed":
            text = text[: max(1, len(text) // 2)] + " <<not json"
        elif fault == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "length"
        prompt_tokens = max(1, len(json.dumps(body.get("messages", []))) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if tool:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": tool, "arguments": text}}],
            }
        else:
            message = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if body.get("logprobs") and not tool:  # like OpenAI: log-probabilities of content, none for tool calls
            choice["logprobs"] = {"content": _logprobs(text, plan.get("logprob"), rng)}
        choices = [] if fault == "empty" else [choice]
        return {
            "id": f"chatcmpl-{self._rng.getrandbits(48):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.get("model", body.get("model", "chaos")),  # a script may answer as another model
            "system_fingerprint": plan.get("system_fingerprint", "fp_chaos"),
            "choices": choices,
            "usage": usage,
        }


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _logprobs(text: str, given: Any, rng: random.Random) -> list[dict[str, Any]]:
    """Token log-probabilities for ``text``: the script's ``logprob`` for every word, else drawn per word.

    Punctuation and spaces get 0 (certain), as the JSON around the values is for a real model.
    """
    tokens = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        word = token[0].isalnum() or token[0] == "_"
        logprob = (float(given) if given is not None else -0.5 * rng.random()) if word else 0.0
        tokens.append({"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []})
    return tokens
