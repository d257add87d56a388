"""The loader: golden error lines, examples, overrides, env, safety."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadyflow.spec import Problem, SpecError, load_pipeline
from steadyflow.spec.loader import parse_spec
from steadyflow.spec.schema import pipeline_schema

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests/fixtures/invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_enough_invalid_fixtures() -> None:
    assert len(INVALID) >= 25
    assert all(p.with_suffix(".expected").exists() for p in INVALID)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_gives_its_expected_lines(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("STEADYFLOW_SURELY_UNSET_VAR", raising=False)
    relative = path.relative_to(ROOT)
    with pytest.raises(SpecError) as caught:
        load_pipeline(relative)
    expected = path.with_suffix(".expected").read_text().splitlines()
    assert [str(p) for p in caught.value.problems] == expected


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_loads_and_compiles(path: Path) -> None:
    pipeline = load_pipeline(path)
    assert pipeline.stages
    for stage in pipeline.stages:
        assert stage.output_model.model_json_schema()["properties"]


def test_prompt_version_is_a_content_hash(tmp_path: Path) -> None:
    text = (ROOT / "configs/support_triage.yaml").read_text()
    first = parse_spec(text, "a.yaml")[0]
    assert first.pipeline == "support-triage"
    v1 = load_pipeline(ROOT / "configs/support_triage.yaml").stages[0].prompt
    assert v1 is not None and len(v1.version) == 12
    edited = tmp_path / "support_triage.yaml"  # the files it names (rules, data) next to it, as in configs/
    shutil.copytree(ROOT / "configs", tmp_path, dirs_exist_ok=True)
    edited.write_text(text.replace("{file: prompts/triage.md}", '{template: "Classify {{ text }}"}'))
    v2 = load_pipeline(edited).stages[0].prompt
    assert v2 is not None and v2.version != v1.version


def test_set_overrides_any_value_and_items_by_stage_id() -> None:
    pipeline = load_pipeline(
        ROOT / "configs/support_triage.yaml",
        [
            "models.small.base_url=http://127.0.0.1:9/v1",
            "stages.triage.input.max_chars=99",
            "run.concurrency=3",
        ],
    )
    assert pipeline.spec.models["small"].base_url == "http://127.0.0.1:9/v1"
    assert pipeline.spec.stages[0].input.max_chars == 99
    assert pipeline.spec.run.concurrency == 3


def test_set_with_a_typo_points_at_the_override() -> None:
    with pytest.raises(SpecError) as caught:
        load_pipeline(ROOT / "configs/support_triage.yaml", ["models.small.timeout_z=3"])
    assert "unknown key 'timeout_z' (did you mean 'timeout_s'?)" in str(caught.value)


MINIMAL = """pipeline: p
models:
  m: {provider: openai, base_url: "${SF_TEST_URL:-http://127.0.0.1:8765/v1}", api_key: "${SF_TEST_KEY:-none}"}
stages:
  - {id: s, kind: ai, prompt: {template: "{{ text }}"}, output: {a: {type: string}}, ladder: [{model: m}]}
"""


def test_env_default_and_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(MINIMAL)
    monkeypatch.setenv("SF_TEST_URL", "http://127.0.0.1:1234/v1")
    assert load_pipeline(file).spec.models["m"].base_url == "http://127.0.0.1:1234/v1"
    monkeypatch.delenv("SF_TEST_URL")
    assert load_pipeline(file).spec.models["m"].base_url == "http://127.0.0.1:8765/v1"


def test_api_key_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(MINIMAL)
    monkeypatch.setenv("SF_TEST_KEY", "sk-very-secret")
    pipeline = load_pipeline(file)
    assert pipeline.spec.models["m"].api_key is not None
    assert pipeline.spec.models["m"].api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(pipeline.spec)
    assert "sk-very-secret" not in pipeline.spec.model_dump_json()


def test_local_only_settings_on_another_provider_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        MINIMAL.replace('api_key: "${SF_TEST_KEY:-none}"', "model_path: x.gguf, context_tokens: 2048, servers: 2")
    )
    with pytest.raises(SpecError) as caught:
        load_pipeline(file)
    lines = [str(p) for p in caught.value.problems]
    assert any(":3:" in line and "'model_path' applies to provider 'local' only" in line for line in lines), lines
    assert any(":3:" in line and "'servers' applies to provider 'local' only" in line for line in lines), lines
    assert not any("context_tokens" in line for line in lines), lines  # any endpoint may declare its context (issue 12)


def test_schema_covers_the_dsl() -> None:
    schema = pipeline_schema()
    assert {"pipeline", "stages", "models", "sink", "source"} <= set(schema["properties"])
    assert "AiStage" in schema["$defs"] and "RulesStage" in schema["$defs"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_loader_only_ever_raises_its_own_error_on_arbitrary_text(text: str) -> None:
    problems: list[Problem] = []
    try:
        parse_spec(text, "fuzz.yaml")
    except SpecError as exc:
        problems = exc.problems
    assert all(p.line >= 1 and p.col >= 1 for p in problems)


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["pipeline", "stages", "kind", "id", "ladder", "model", "output", "x"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_yaml_values)
def test_loader_only_ever_raises_its_own_error_on_arbitrary_structures(value: object) -> None:
    import yaml

    with contextlib.suppress(SpecError):
        parse_spec(yaml.safe_dump(value), "fuzz.yaml")


def test_did_you_mean_never_suggests_the_word_itself() -> None:
    from steadyflow.core.names import did_you_mean

    assert did_you_mean("field", ["field", "fields"]) == " (did you mean 'fields'?)"
    assert did_you_mean("field", ["field"]) == ""
