"""Constraints for the floors job: the pure-Python dependencies the floors are claimed for at the
lowest version pyproject.toml allows, everything else as constraints.txt pins it.

    python .ci/lowest.py > lowest.txt && pip install -c lowest.txt -e '.[test]'
    python .ci/lowest.py --check   # in that environment: exit 1 unless the floors are installed
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

AT_FLOOR = {"optuna", "sqlalchemy", "pandas", "scikit-learn", "numpy"}
REPO = Path(__file__).resolve().parents[1]


def floors() -> dict[str, str]:
    """Each AT_FLOOR dependency's `>=` bound in the package metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in AT_FLOOR:
            (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
            found[name] = floor
    if set(found) != AT_FLOOR:
        raise SystemExit(f"no floor in pyproject.toml for {sorted(AT_FLOOR - set(found))}")
    return found


def check(lowest: dict[str, str]) -> None:
    """Exit 1 unless this environment holds exactly the floors."""
    installed = {name: metadata.version(name) for name in lowest}
    print(", ".join(f"{name} {version}" for name, version in sorted(installed.items())))
    wrong = {n: v for n, v in installed.items() if Version(v) != Version(lowest[n])}
    if wrong:
        raise SystemExit(f"not at the floors pyproject.toml declares: {wrong} (want {lowest})")


def main() -> None:
    lowest = floors()
    if sys.argv[1:] == ["--check"]:
        check(lowest)
        return
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name = canonicalize_name(line.split("==")[0]) if "==" in line else None
        if name not in lowest:
            print(line)
    for name, floor in sorted(lowest.items()):
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
