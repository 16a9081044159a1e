"""Both a built wheel and the editable install import the whole burstpilot namespace and run the CLI.

The repository keeps every stage (traces/ loadtest/ sim/ forecasting/ policy/ operator/ evaluation/) at
the top level and maps each into burstpilot.* in pyproject.toml; these tests prove the mapping holds in
both install modes, that no source file is left out of the wheel, and that the image build copies every
mapped folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
MAPPED = tuple(p for p in PACKAGE_DIR if p != "burstpilot")


def _source_folder(package: str) -> Path:
    """The folder a package comes from, following the longest package-dir prefix."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in PACKAGE_DIR:
            return ROOT / PACKAGE_DIR[prefix] / Path(*parts[cut:])
    raise AssertionError(f"{package} has no package-dir mapping")


def _expected_files() -> set[str]:
    files = set()
    for package in PACKAGES:
        folder = _source_folder(package)
        for path in folder.glob("*.py"):
            files.add("/".join(package.split(".")) + "/" + path.name)
    return files


def test_every_source_folder_is_a_listed_package():
    """A folder with an __init__.py under a mapped root must be listed in pyproject's packages."""
    listed = {_source_folder(p).resolve() for p in PACKAGES}
    for root in {ROOT / d for d in PACKAGE_DIR.values()}:
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            assert init.parent.resolve() in listed, (
                f"{init.parent} is a package missing from pyproject packages"
            )


def _run(cmd, cwd, **kw):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        cwd=ROOT,
    )
    (whl,) = out.glob("burstpilot-*.whl")
    return whl


def test_wheel_contains_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _expected_files() - names
    assert not missing, f"wheel lacks {sorted(missing)}"
    assert not any(n.startswith(("operator/", "forecasting/", "loadtest/")) for n in names), (
        "a mapped folder leaked into the wheel under its bare name"
    )


def test_wheel_install_imports_and_runs(wheel, tmp_path):
    """Install the wheel alone into a fresh venv whose dependencies come from the dev venv's site-packages."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
        ).strip()
    )
    # Dependencies only: a plain path line adds the folder but does not run the editable finder's .pth there.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    probe = (
        f"import burstpilot, operator, {', '.join(MAPPED)}\n"
        "import burstpilot.operator as op\n"
        f"assert op.__file__.startswith({str(site)!r}), op.__file__\n"
        "assert operator.__file__.endswith('operator.py') and 'site-packages' not in operator.__file__\n"
        "print('ok')\n"
    )
    assert _run([str(py), "-c", probe], cwd=tmp_path).strip() == "ok"
    cli = str(env_dir / "bin" / "burstpilot")
    assert "usage: burstpilot" in _run([cli, "--help"], cwd=tmp_path)
    # Package data travels too: the calibrated profiles are JSON files inside burstpilot.sim.
    profiles = {p["name"] for p in json.loads(_run([cli, "sim", "profiles", "--json"], cwd=tmp_path))}
    assert "h100-llama3-8b" in profiles


def test_editable_install_imports_and_runs(tmp_path):
    """The dev venv holds an editable install: imports resolve into the repository's own folders."""
    probe = "import importlib; " + "; ".join(
        f"print(importlib.import_module({m!r}).__file__)" for m in ("burstpilot",) + MAPPED
    )
    files = _run([sys.executable, "-c", probe], cwd=tmp_path).split()
    assert files[0] == str(ROOT / "src" / "burstpilot" / "__init__.py")
    for module, file in zip(MAPPED, files[1:], strict=True):
        assert file == str(ROOT / module.split(".")[1] / "__init__.py")
    cli = Path(sys.executable).parent / "burstpilot"
    assert "usage: burstpilot" in _run([str(cli), "--help"], cwd=tmp_path)


def test_every_stage_is_a_mapped_top_level_folder_and_the_image_copies_it():
    stages = {"traces", "loadtest", "sim", "forecasting", "policy", "operator", "evaluation"}
    assert {PACKAGE_DIR[m] for m in MAPPED} == stages
    assert (
        sorted(
            p.name for p in (ROOT / "src" / "burstpilot").iterdir() if p.is_dir() and p.name != "__pycache__"
        )
        == []
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for folder in stages | {"src"}:
        assert f"COPY {folder} ./{folder}" in dockerfile, folder
        assert f"!{folder}/" in ignore, folder
