"""Prompt templates run once per document: every render is bounded in time and memory."""

from __future__ import annotations

import time

import jinja2
import pytest

from steadyflow.spec.prompt import check_template, make_prompt
from steadyflow.spec.template_bounds import MAX_RENDER_CHARS

DOC = {"text": "hello", "id": "d1", "outputs": {}, "doc": {"items": list(range(100_000)), "s": "x" * 100_000}}


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 3000000000 }}",
        "{{ doc.s * 1000 }}",
        "{{ 2 ** 100000000 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in doc['items'] %}{% for j in doc['items'] %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ doc.s }}{% endfor %}",
        "{{ 'x'.center(1000000000) }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ doc.s|replace('x', doc.s) }}",
        "{{ doc['items']|join(doc.s) }}",
        "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{{ 1 / 0 }}",
    ],
)
def test_a_costly_template_is_a_bounded_template_error(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(jinja2.TemplateError) as caught:
        make_prompt(template, None).render(DOC)
    assert time.monotonic() - started < 3
    assert "x" * 50 not in str(caught.value)  # never document values in the reason


def test_ordinary_templates_still_render() -> None:
    text = (
        "{% for x in doc['items'][:3] %}{{ loop.index }}/{{ loop.length }} {% endfor %}{{ text|upper }} {{ 'ab' * 3 }}"
    )
    assert make_prompt(text, None).render(DOC) == "1/3 2/3 3/3 HELLO ababab"
    assert len(make_prompt("{{ doc.s * 20 }}", None).render(DOC)) == MAX_RENDER_CHARS


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 3000000000 }}",
        "{{ 'x' * (1000 * 3000000) }}",
        "{{ 2 ** 99999999 }}",
        "{{ 'x'|center(10000000000) }}",
        "{{ '%0999999999d' % 1 }}",
    ],
)
def test_obviously_huge_constants_are_refused_at_validate_time(template: str) -> None:
    found = check_template(template)
    assert found is not None and "prompt template is too costly" in found[1]
