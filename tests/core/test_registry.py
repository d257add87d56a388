"""The one registry of named things: lookup, the decorator, did-you-mean, entry points, undo."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyflow.core.registry import Registry
from steadyflow.stages.kinds import STAGE_KINDS, stage
from steadyflow.stages.routing import ESTIMATORS, estimator, estimators
from steadyflow.validators.base import CHECKS, Finding, plugin, plugin_names, validator

Named = Callable[[], str]
GROUP = "steadyflow.tests.registry"


def _one() -> str:
    return "one"


def test_lookup_by_name_and_the_decorator() -> None:
    things: Registry[Named] = Registry("thing")
    things.add("one", _one, builtin=True)

    @things.register("two")
    def two() -> str:
        return "two"

    assert things.get("one") is _one and things.get("two") is two and two() == "two"
    assert things.get("three") is None and "three" not in things and "two" in things
    assert things.names() == ["one", "two"] and things.names(plugins_only=True) == ["two"]


def test_an_unknown_name_suggests_the_closest_or_lists_the_known() -> None:
    things: Registry[Named] = Registry("thing")
    things.add("heuristic", _one)
    assert things.unknown("heuristc") == "unknown thing 'heuristc' (did you mean 'heuristic'?)"
    assert things.unknown("zzz") == "unknown thing 'zzz' (known: heuristic)"
    assert things.unknown("grounde", also=("grounded",)) == "unknown thing 'grounde' (did you mean 'grounded'?)"
    assert Registry("thing").unknown("x") == "unknown thing 'x' (known: none)"


def test_scoped_undoes_every_registration_made_inside() -> None:
    things: Registry[Named] = Registry("thing")
    things.add("one", _one)
    with things.scoped():
        things.add("two", _one)
        things.add("one", lambda: "replaced")
        assert things.names() == ["one", "two"]
    assert things.names() == ["one"] and things.get("one") is _one


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path holding installed distributions (dist-info with entry points) and their modules."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("sf_demo_good", "sf_demo_broken"):
            sys.modules.pop(name, None)


def _distribution(site: Path, name: str, entry_points: str, module: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (site / f"{name}.py").write_text(module)


def test_entry_points_of_installed_packages_are_found_and_a_broken_one_is_named(installed: Path) -> None:
    _distribution(
        installed, "sf_demo_good", f"[{GROUP}]\nshout = sf_demo_good:shout\n", "def shout():\n    return 'HI'\n"
    )
    _distribution(
        installed, "sf_demo_broken", f"[{GROUP}]\nbroken = sf_demo_broken:check\n", "raise ImportError('no')\n"
    )
    things: Registry[Named] = Registry("thing", GROUP)
    shout = things.get("shout")
    assert shout is not None and shout() == "HI"
    assert things.get("broken") is None and things.names() == ["shout"]
    assert things.unknown("broken") == (
        "thing 'broken' is installed but cannot be loaded: ImportError (in sf_demo_broken:check)"
    )
    assert things.unknown("shuot") == "unknown thing 'shuot' (did you mean 'shout'?)"


def test_entry_points_are_read_afresh_inside_a_scope_and_forgotten_after(installed: Path) -> None:
    things: Registry[Named] = Registry("thing", GROUP)
    assert things.names() == []  # read once: the package is not installed yet
    _distribution(
        installed, "sf_demo_good", f"[{GROUP}]\nshout = sf_demo_good:shout\n", "def shout():\n    return 'HI'\n"
    )
    assert things.get("shout") is None
    with things.scoped():
        assert things.get("shout") is not None
    assert things.names() == []


def test_checks_estimators_and_stage_kinds_share_the_registry() -> None:
    @validator("always_passes")
    def always_passes(params: object, output: object, context: object) -> Finding:
        return Finding(True)

    @estimator("always_half")
    def always_half(text: str) -> float:
        return 0.5

    @stage("echo")
    def echo(params: dict[str, Any], text: str, context: Any) -> dict[str, Any]:
        return {"text": text}

    assert plugin("always_passes") is always_passes and CHECKS.get("always_passes") is always_passes
    assert STAGE_KINDS.get("echo") is echo
    assert "always_passes" in plugin_names()
    assert estimators()["always_half"] is always_half and "heuristic" in estimators()
    assert ESTIMATORS.unknown("heuristik") == "unknown estimator 'heuristik' (did you mean 'heuristic'?)"
    assert CHECKS.unknown("always_passs") == "unknown check 'always_passs' (did you mean 'always_passes'?)"


def test_registrations_of_an_earlier_test_are_gone() -> None:
    """The autouse fixture in tests/conftest.py undoes what each test registers (the test above registered these)."""
    assert plugin("always_passes") is None and "always_half" not in estimators() and "echo" not in STAGE_KINDS


def test_an_installed_package_adds_an_estimator(installed: Path) -> None:
    _distribution(
        installed,
        "sf_demo_good",
        "[steadyflow.estimators]\nalways_one = sf_demo_good:always_one\n",
        "def always_one(text):\n    return 1.0\n",
    )
    function = estimators()["always_one"]  # read afresh: each test runs in a scope of its own (tests/conftest.py)
    assert function("x") == 1.0 and ESTIMATORS.get("always_one") is function
