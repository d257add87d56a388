"""A simulated provider fleet: OpenAI-compatible endpoints with prices, latencies, errors and incidents.

Reads a scenario file of the form of ``benchmarks/scenarios/fleet.yaml``. Every endpoint
answers at ``/<endpoint>/v1/chat/completions`` on one loopback server. Requests are
documents the scenario's workload generates (:func:`workload`); each carries a
``Request-ID`` line, which is how the simulator knows a request's hidden truth
(its complexity class and right answer). Nothing the simulator knows is given to
the client: a router sees only the document text.

Per request and attempt, seeded: an error (429 with Retry-After, 5xx, or a hang past
the timeout), else an answer after ttft (lognormal with the scenario's median and
p95) plus output tokens / tokens per second, all divided by ``time_scale``. The
answer is unparseable JSON at the endpoint's rate for prompted or schema-constrained
requests; otherwise right with the endpoint's accuracy for the class, and when wrong,
detectable (its evidence is not in the document) with the scenario's ``detectable`` share.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steadyflow.chaos.server import ChaosConfig, ChaosServer

LABELS = ("refund", "technical", "account", "shipping", "cancellation")
TOPICS = {
    "refund": "asks for the money back for a double charge on the last invoice",
    "technical": "reports that the application crashes with an error after the update",
    "account": "cannot log in because the password reset link has expired",
    "shipping": "says the parcel tracking has not moved for a week",
    "cancellation": "wants to end the subscription at the end of this billing period",
}
_FILLER = (
    "The message was forwarded from the regional desk.",
    "Earlier correspondence is quoted below for context.",
    "The customer has been with us for several years.",
    "A previous agent noted the conversation in the log.",
    "The team lead asked for a summary of the history.",
    "Several attachments were referenced but not included.",
    "The account shows regular activity over the last months.",
    "Internal notes mention a review of similar cases.",
)
_ID = re.compile(r"Request-ID: (req-\d+)")
TIMEOUT_REAL_S = 30.0


@dataclass(frozen=True)
class Request:
    """One request of the workload and its hidden truth."""

    rid: str
    index: int
    complexity: str
    label: str
    evidence: str
    text: str


def load_scenario(path: str | Path) -> dict[str, Any]:
    """A scenario file, as data."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or "endpoints" not in data or "workload" not in data:
        raise ValueError(f"{path}: not a fleet scenario (needs endpoints and workload)")
    return data


def workload(scenario: dict[str, Any], count: int | None = None) -> list[Request]:
    """The scenario's requests, generated from its seed: sized by class, one key sentence each."""
    rng = random.Random(scenario["seed"])
    classes = scenario["workload"]["classes"]
    names, weights = list(classes), [classes[c]["share"] for c in classes]
    out = []
    for index in range(count or int(scenario["requests"])):
        complexity = rng.choices(names, weights)[0]
        label = rng.choice(LABELS)
        rid = f"req-{index:05d}"
        evidence = f"In case {rid} the customer {TOPICS[label]}."
        chars = int(classes[complexity]["input_tokens"]) * 4
        body = [evidence]
        while sum(len(s) + 1 for s in body) < chars:
            body.insert(rng.randrange(len(body) + 1), rng.choice(_FILLER))
        out.append(Request(rid, index, complexity, label, evidence, f"Request-ID: {rid}\n\n" + " ".join(body)))
    return out


def _processing(seconds: float) -> dict[str, str]:
    """OpenAI's header for the provider's processing time: here, the simulated delay (in scaled time)."""
    return {"openai-processing-ms": f"{seconds * 1000:.3f}"}


def _lognormal(rng: random.Random, median: float, p95: float) -> float:
    sigma = math.log(p95 / median) / 1.645 if p95 > median else 0.0
    return median * math.exp(sigma * rng.gauss(0, 1))


class FleetServer(ChaosServer):
    """All endpoints of a scenario on one loopback HTTP server."""

    def __init__(
        self, scenario: dict[str, Any], requests: list[Request], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(ChaosConfig(seed=int(scenario["seed"])), host, port)
        self.scenario = scenario
        self.scale = float(scenario.get("time_scale", 1))
        self.truth = {r.rid: r for r in requests}
        self.total = max(1, len(requests))
        self.tries: Counter[tuple[str, str]] = Counter()
        self.served: Counter[str] = Counter()

    def url(self, endpoint: str) -> str:
        """The OpenAI base URL of one endpoint."""
        return f"http://{self.host}:{self.port}/{endpoint}/v1"

    async def _respond(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "POST" and path == "/_chaos/reset":
            # every strategy of a benchmark then meets the same draws: a request's n-th call to an endpoint behaves
            # alike whichever strategy makes it, so that their differences are theirs, not the dice's
            self.tries.clear()
            self.served.clear()
        parts = path.strip("/").split("/", 1)
        if len(parts) == 2 and parts[0] in self.scenario["endpoints"]:
            if method == "POST" and parts[1] == "v1/chat/completions":
                return await self._simulate(parts[0], raw, writer)
            if method == "GET" and parts[1] == "v1/models":
                await self._send(writer, 200, {"object": "list", "data": [{"id": parts[0], "object": "model"}]})
                return True
        return await super()._respond(method, path, raw, writer)

    def _conditions(self, endpoint: str, index: int) -> dict[str, Any]:
        spec = dict(self.scenario["endpoints"][endpoint])
        errors, ttft = dict(spec.get("errors", {})), dict(spec["ttft_ms"])
        for incident in self.scenario.get("incidents", []):
            if incident["endpoint"] == endpoint and incident["from"] <= index / self.total < incident["to"]:
                errors.update({k: v for k, v in incident.items() if k.startswith("rate_")})
                ttft.update(incident.get("ttft_ms", {}))
        return {**spec, "errors": errors, "ttft_ms": ttft}

    async def _simulate(self, endpoint: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        body = json.loads(raw)
        prompt = json.dumps(body.get("messages", []))
        found = _ID.search(prompt)
        request = self.truth.get(found.group(1)) if found else None
        if request is None:
            await self._send(
                writer, 400, {"error": {"message": "no Request-ID in the prompt", "type": "invalid_request_error"}}
            )
            return True
        self.tries[(endpoint, request.rid)] += 1
        rng = random.Random(f"{self.scenario['seed']}:{endpoint}:{request.rid}:{self.tries[(endpoint, request.rid)]}")
        spec = self._conditions(endpoint, request.index)
        roll, errors = rng.random(), spec["errors"]
        if roll < errors.get("rate_429", 0):
            self.served[f"{endpoint}:429"] += 1
            await asyncio.sleep(0.05 / self.scale)
            await self._send(
                writer,
                429,
                {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                {"Retry-After": f"{1.0 / self.scale:g}", **_processing(0.05 / self.scale)},
            )
            return True
        roll -= errors.get("rate_429", 0)
        if roll < errors.get("rate_5xx", 0):
            self.served[f"{endpoint}:5xx"] += 1
            await asyncio.sleep(0.2 / self.scale)
            await self._send(
                writer, 503, {"error": {"message": "overloaded", "type": "server_error"}}, _processing(0.2 / self.scale)
            )
            return True
        roll -= errors.get("rate_5xx", 0)
        if roll < errors.get("rate_timeout", 0):
            self.served[f"{endpoint}:timeout"] += 1
            await asyncio.sleep(TIMEOUT_REAL_S / self.scale + 0.1)
            writer.transport.abort()
            return False
        klass = self.scenario["workload"]["classes"][request.complexity]
        ttft = _lognormal(rng, spec["ttft_ms"]["median"], spec["ttft_ms"]["p95"]) / 1000
        delay = (ttft + klass["output_tokens"] / spec["tokens_per_s"]) / self.scale
        await asyncio.sleep(delay)
        self.served[f"{endpoint}:ok"] += 1
        await self._send(
            writer, 200, self._completion_body(body, endpoint, request, spec, rng, prompt), _processing(delay)
        )
        return True

    def _completion_body(
        self,
        body: dict[str, Any],
        endpoint: str,
        request: Request,
        spec: dict[str, Any],
        rng: random.Random,
        prompt: str,
    ) -> dict[str, Any]:
        fmt = body.get("response_format") or {}
        constrained = bool(body.get("tools")) or fmt.get("type") == "json_schema" or isinstance(fmt.get("schema"), dict)
        invalid = spec["schema_json_invalid"] if constrained else spec["prompted_json_invalid"]
        correct = self.scenario["workload"]["correct"][endpoint][request.complexity]
        if rng.random() < correct:
            answer = {"label": request.label, "evidence": request.evidence}
        else:
            wrong = rng.choice([label for label in LABELS if label != request.label])
            detectable = rng.random() < self.scenario["workload"]["detectable"]
            evidence = f"The customer {TOPICS[wrong]}." if detectable else request.evidence
            answer = {"label": wrong, "evidence": evidence}
        text = json.dumps(answer)
        if rng.random() < invalid:
            text = text[: len(text) // 2] + " ... (as I said above"
        tool = (body.get("tools") or [{}])[0].get("function", {}).get("name")
        message: dict[str, Any] = (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c0", "type": "function", "function": {"name": tool, "arguments": text}}],
            }
            if tool
            else {"role": "assistant", "content": text}
        )
        output_tokens = int(self.scenario["workload"]["classes"][request.complexity]["output_tokens"])
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": output_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + output_tokens
        return {
            "id": f"sim-{request.rid}",
            "object": "chat.completion",
            "created": 0,
            "model": endpoint,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}],
            "usage": usage,
        }
