"""A real install (issue 14): ``pip install .`` into a fresh virtual environment builds the
compiled readers with the package; a build without a C compiler installs the pure-Python
parser and says so, at install and when it runs.

The builds run as pip runs them, but without build isolation and without an index (these
machines reach no registry in tests): the fresh environment sees this project's
dependencies (setuptools, Cython, lxml, ...) through a ``.pth`` file, and gets its own copy of
the package from a copy of the source tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson
import pytest

from extractor.simulator.server import Simulator
from tests.helpers import c_compiler, credentials_env

ROOT = Path(__file__).resolve().parent.parent
#: What a built tree holds that a clean checkout does not.
BUILT = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.so", "_speedups.c", "__pycache__", "*.egg-info", ".*_cache",
    "demo-output", "bench-output",
)  # fmt: skip


def fresh_install(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str]:
    """A new virtual environment with ``pip install .`` of a copy of the source; its bin
    directory and pip's verbose output."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=BUILT)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies, after the environment's own packages (so its extractor comes first)
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", python, "install", "-v", "--no-deps",
            "--no-build-isolation", "--no-index", "--disable-pip-version-check", source,
        ],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv / "bin", pip.stdout + pip.stderr


def outside(tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a command of the fresh environment away from the source tree; its stdout."""
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, cwd=tmp_path,
        env=env if env is not None else _clean(os.environ), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _clean(env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """The environment without what would pick the parser or the package for the test."""
    return {k: v for k, v in env.items() if k not in {"EXTRACTOR_PURE_PYTHON", "PYTHONPATH"}}


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler on this machine")
def test_pip_install_builds_the_compiled_readers(tmp_path: Path) -> None:
    bin_, _ = fresh_install(tmp_path, _clean(os.environ))
    version = outside(tmp_path, bin_ / "extractor", "--version")
    assert "parser: compiled readers (Cython, lxml " in version, version
    where = outside(
        tmp_path, bin_ / "python", "-c",
        "import extractor.parser as p; print(p.__file__); print(p.SPEEDUPS.__file__)",
    )  # fmt: skip
    assert all(line.startswith(str(tmp_path / "venv")) for line in where.splitlines()), where
    # the package data came along: the WSDLs the properties are read from
    listed = outside(tmp_path, bin_ / "extractor", "properties", "--json")
    assert "OrderId" in {orjson.loads(line)["name"] for line in listed.splitlines()}


async def test_without_a_compiler_it_installs_the_fallback_and_says_so(
    tmp_path: Path, start_simulator: object
) -> None:
    env = _clean(os.environ) | {"CC": str(tmp_path / "no-such-compiler")}
    bin_, said = await asyncio.to_thread(fresh_install, tmp_path, env)
    assert "the compiled readers were not built" in said and "no-such-compiler" in said
    version = outside(tmp_path, bin_ / "extractor", "--version")
    assert "parser: pure Python (the compiled readers are not installed" in version
    simulator: Simulator = await start_simulator(orders=60)  # type: ignore[operator]
    run = await asyncio.create_subprocess_exec(
        bin_ / "extractor", "invoices", "--out", tmp_path / "out", "--base-url", simulator.url,
        "--max-requests-per-hour", "0", "--parse-workers", "0", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        env=_clean(os.environ) | credentials_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(run.communicate(), 120)
    assert run.returncode == 0, err.decode()
    assert orjson.loads(out)["invoices"] == 60
    assert err.decode().count("parsing with the pure-Python parser, 2-3x slower") == 1
