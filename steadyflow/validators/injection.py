"""Signs of prompt injection in a document: flagged and recorded, never obeyed.

These are signs, not proof: a document that talks *about* instructions may
match. What keeps outputs safe is not this list but the sandwich around the
model: the schema grammar, the validators and the rules below it. Recording
the signs lets a reviewer see which documents tried.
"""

from __future__ import annotations

import regex

_FLAGS = regex.IGNORECASE | regex.DOTALL
SIGNS: dict[str, regex.Pattern[str]] = {
    "ignore_instructions": regex.compile(
        r"\b(ignore|disregard|forget|override|bypass)\b.{0,60}?\b(previous|prior|above|earlier|all|any|your|these|the)\b.{0,40}?"
        r"\b(instruction|prompt|rule|direction|guideline|polic|constraint)",
        _FLAGS,
    ),
    "role_override": regex.compile(
        r"\b(you are now|you're now|you are no longer|from now on|act as|pretend (to be|you are)|roleplay as|"
        r"enter .{0,20}mode|developer mode|jailbreak|do anything now)\b",
        _FLAGS,
    ),
    "persona_names": regex.compile(r"\b(DAN|STAN|DUDE|AIM|AntiGPT|BetterDAN)\b"),
    "system_prompt": regex.compile(
        r"\b(system|developer|hidden|initial) (prompt|message|instruction)s?\b|"
        r"\breveal (your|the) (prompt|instructions)",
        _FLAGS,
    ),
    "fake_turns": regex.compile(
        r"</?(system|assistant|user)>|<\|im_(start|end)\|>|\[/?INST\]|^\s*#{2,}\s*(instruction|system)",
        _FLAGS | regex.M,
    ),
    "output_override": regex.compile(
        r"\b(respond|reply|answer|output|return|print|say)\b.{0,20}?\b(only|exactly|with the following|nothing but)\b"
        r"|\bset (the )?(category|priority|output|answer) to\b",
        _FLAGS,
    ),
}


def injection_signs(text: str) -> list[str]:
    """Names of the signs found in ``text`` (bounded: patterns are checked on the first 50,000 characters)."""
    sample = text[:50_000]
    return [name for name, pattern in SIGNS.items() if pattern.search(sample, timeout=0.5)]
