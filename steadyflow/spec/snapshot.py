"""A pipeline as it was run: everything that decides an output, as one JSON-able value with a hash.

A run stores the snapshot of its pipeline (``runs.sqlite``), so a recorded version can be shown and
compared again after the file changed (``steadyflow diff``), and prompts are kept by their version
(the hash of their text): prompts are code, not documents. Secrets never enter it: API keys are
masked by pydantic (``SecretStr``) and URLs lose their user and password.

What is in it: the pipeline's name and version, its models and their parameters, and per stage its
kind, input settings, output schema, prompt (version, system and template text), ladder (rules
files resolved to their content), checks and routing. Values left at their defaults are included
(a changed default changes what runs), source, sink and run settings are not (they decide where
documents come from and go, not what a document becomes).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

from steadyflow.spec.loader import CompiledStage, LoadedPipeline


def _no_credentials(url: str | None) -> str | None:
    """``https://user:pw@host/v1`` -> ``https://host/v1``: a snapshot is shown and compared, never a secret."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _stage(stage: CompiledStage) -> dict[str, Any]:
    spec = stage.spec.model_dump(mode="json", by_alias=True)
    spec.pop("description", None)  # words for people: a changed description changes no output
    out: dict[str, Any] = {"kind": spec.pop("kind"), "input": spec.pop("input")}
    out["output"] = stage.output_model.model_json_schema()
    spec.pop("output", None)
    spec.pop("output_model", None)
    if stage.prompt is not None:
        out["prompt"] = {
            "version": stage.prompt.version,
            "system": stage.prompt.system,
            "template": stage.prompt.template,
        }
        spec.pop("prompt", None)
    if "ladder" in spec:
        ladder = spec.pop("ladder")
        for index, rules in stage.rules.items():  # a rules file's content, not its name: editing it changes outputs
            ladder[index]["rules"] = rules.model_dump(mode="json")
        out["ladder"] = ladder
    elif 0 in stage.rules:
        spec["rules"] = stage.rules[0].model_dump(mode="json")
    out["validate"] = spec.pop("validate", [])
    out.update(spec)  # route, deadline_s, default, review, with...
    return out


def snapshot(pipeline: LoadedPipeline) -> dict[str, Any]:
    """What decides this pipeline's outputs, as JSON-able data (see the module's docstring)."""
    models = {}
    for name, model in pipeline.spec.models.items():
        data = model.model_dump(mode="json")
        data["base_url"] = _no_credentials(data.get("base_url"))
        if data.get("api_key"):
            data["api_key"] = "(set)"  # whether one is set may matter; its value never does here
        models[name] = data
    return {
        "pipeline": pipeline.spec.pipeline,
        "version": pipeline.spec.version,
        "models": models,
        "stages": {stage.id: _stage(stage) for stage in pipeline.stages},
    }


def snapshot_hash(data: dict[str, Any]) -> str:
    """A short, stable fingerprint of a snapshot (16 hex digits of the SHA-256 of its canonical JSON)."""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def prompts(data: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Prompt version -> {system, template} of every stage of a snapshot."""
    found = {}
    for stage in data.get("stages", {}).values():
        prompt = stage.get("prompt")
        if isinstance(prompt, dict) and "version" in prompt:
            found[prompt["version"]] = {"system": prompt.get("system", ""), "template": prompt.get("template", "")}
    return found
