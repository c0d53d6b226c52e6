"""Where lrsweep installs: the metadata's Python and dependency ranges, the pins inside them,
and an install into an environment that has torch keeping that torch (as a CUDA image has it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REQUIREMENTS = {Requirement(text).name: Requirement(text) for text in PROJECT["dependencies"]}
INSTALL = REPO / "install-keeping-torch.sh"


def test_python_3_10_to_3_13_are_admitted_and_nothing_outside() -> None:
    python = SpecifierSet(PROJECT["requires-python"])
    for version in ("3.10.0", "3.11.9", "3.12.3", "3.13.0"):
        assert version in python
    for version in ("3.9.18", "3.14.0"):
        assert version not in python


def test_the_torch_of_cuda_images_is_admitted_up_to_the_next_major() -> None:
    torch = REQUIREMENTS["torch"].specifier
    for version in ("2.11.0", "2.11.0+cu128", "2.13.0+cpu", "2.15.0"):
        assert torch.contains(version, prereleases=False), version
    assert not torch.contains("3.0.0")


def test_every_dependency_has_a_floor_and_a_ceiling_the_pins_sit_between() -> None:
    pins = {
        Requirement(line).name.lower(): Version(line.split("==")[1])
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for name, requirement in REQUIREMENTS.items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, name
        if requirement.marker is None:  # tomli only below 3.11: its API is frozen
            assert "<" in operators, name
        if name.lower() in pins:
            assert requirement.specifier.contains(pins[name.lower()]), (name, pins[name.lower()])


def _install(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), *args],
        env={**os.environ, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_an_install_over_an_existing_torch_keeps_it(tmp_path: Path) -> None:
    """pip resolves the checkout against this environment's torch (2.13.0+cpu here, 2.11 in a
    CUDA image) and installs nothing for torch; asking for another torch fails instead of
    replacing it."""
    report = tmp_path / "report.json"
    args = ("--dry-run", "--no-index", "--no-build-isolation", "--report", str(report))
    kept = _install(Path(sys.executable), *args, str(REPO))
    assert kept.returncode == 0, kept.stderr
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs == ["lrsweep"], installs
    assert f"torch {metadata.version('torch')} kept" in kept.stdout
    replaced = _install(Path(sys.executable), *args, str(REPO), "torch>=2.14")
    assert replaced.returncode != 0
    assert "Cannot install torch>=2.14" in replaced.stderr  # the constraint held


def test_an_environment_without_torch_is_refused_in_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    refused = _install(bare / "bin" / "python")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("install-keeping-torch: no torch in ") and "first" in line


def test_the_gpu_image_builds_on_an_official_pytorch_image_and_keeps_its_torch() -> None:
    lines = (REPO / "Dockerfile.gpu").read_text().splitlines()
    (base,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTORCH_IMAGE=")]
    repository, tag = base.split(":")
    assert repository == "pytorch/pytorch" and "cuda" in tag
    assert REQUIREMENTS["torch"].specifier.contains(tag.split("-")[0])
    assert "FROM ${PYTORCH_IMAGE}" in lines
    run = " ".join(line.strip(" \\") for line in lines if not line.startswith("#"))
    assert run.endswith(
        'RUN PYTHON=python ./install-keeping-torch.sh --no-cache-dir . ENTRYPOINT ["sweeps"]'
    )
    assert "constraints.txt" not in run  # no pin replaces the image's own packages
    assert "pip install" not in run  # only through the script, which pins the image's torch
    copied = {name for line in lines if line.startswith("COPY ") for name in line.split()[1:-1]}
    assert {"trainer", "storage", "sweeps", "lrsweep", "install-keeping-torch.sh"} <= copied
