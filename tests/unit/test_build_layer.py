"""The layer build (infra/build_layer.py): the pip command it builds, and what pip
does with it, offline.

`make synth` builds the layer and `.ci/run` does not synthesize, so these tests
are what stands between a wrong flag and a layer of x86_64 or source-built
packages that fail at import time on Lambda.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import build_layer
from infra.build_layer import PLATFORM, install_dependencies, pip_command, runtime_dependencies

REPO_ROOT = Path(__file__).resolve().parents[2]


def _value(command: list[str], option: str) -> str:
    """The value given to `option` (`--opt value` or `--opt=value`), exactly once."""
    values = [command[i + 1] for i, arg in enumerate(command) if arg == option]
    values += [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{option}=")]
    assert len(values) == 1, (option, command)
    return values[0]


def test_pip_command_asks_for_arm64_cpython_wheels_into_the_layer(tmp_path: Path) -> None:
    # Given a layer directory, the runtime's Python version and two requirements
    # When the command is built
    command = pip_command(tmp_path, "3.14", ["pydantic>=2", "boto3"])
    # Then it is this interpreter's pip installing...
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    # ...manylinux arm64 wheels for CPython 3.14, never an sdist built for this machine
    assert PLATFORM == "manylinux2014_aarch64"
    assert _value(command, "--platform") == "manylinux2014_aarch64"
    assert _value(command, "--implementation") == "cp"
    assert _value(command, "--python-version") == "3.14"
    assert _value(command, "--only-binary") == ":all:"
    assert "--no-binary" not in " ".join(command)
    # ...into <layer>/python, the directory Lambda puts on sys.path
    assert _value(command, "--target") == str(tmp_path / "python")
    assert "--no-compile" in command
    # ...and the requirements, last and unchanged
    assert command[-2:] == ["pydantic>=2", "boto3"]


def test_runtime_dependencies_are_pyprojects_and_nothing_for_development() -> None:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    deps = runtime_dependencies()
    assert deps == project["dependencies"]
    names = " ".join(deps)
    for runtime in ("aws-lambda-powertools", "pydantic", "boto3"):
        assert runtime in names
    for dev in ("pytest", "aws-cdk-lib", "moto", "cdk-nag"):
        assert dev not in names


def test_install_dependencies_runs_that_command_and_drops_console_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given pip replaced by a recorder that leaves a console script behind, as wheels do
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append((command, kwargs))
        (tmp_path / "python" / "bin").mkdir(parents=True)
        (tmp_path / "python" / "bin" / "pybabel").write_text("#!/bin/sh\n")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)  # the module calls subprocess.run
    # When the dependencies are installed
    install_dependencies(tmp_path, "3.14")
    # Then pip ran once, with the built command and the project's dependencies, failing loudly
    assert calls == [(pip_command(tmp_path, "3.14", runtime_dependencies()), {"check": True})]
    # And the scripts directory is gone (nothing in the layer imports it)
    assert not (tmp_path / "python" / "bin").exists()


def _wheel(directory: Path, name: str, version: str, tag: str, *, script: bool = False) -> None:
    """A minimal valid wheel whose module records the tag it was built for."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'TAG = "{tag}"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n"
        ),
    }
    if script:
        files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{name} = {name}:main\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(directory / f"{name}-{version}-{tag}.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def test_pip_picks_the_arm64_wheel_of_the_runtime_python_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a local package index (no network) where every newer release is wrong for
    # Lambda: an x86_64 wheel, a wheel for another Python, and a source distribution
    index = tmp_path / "index"
    index.mkdir()
    probe = "dunning_layer_probe"
    _wheel(index, probe, "1.0", "cp314-cp314-manylinux2014_aarch64", script=True)
    _wheel(index, probe, "2.0", "cp314-cp314-manylinux2014_x86_64")
    _wheel(index, probe, "3.0", "cp313-cp313-manylinux2014_aarch64")
    (index / f"{probe}-4.0.tar.gz").write_bytes(b"not built: --only-binary refuses it")
    _wheel(index, "dunning_layer_pure", "1.0", "py3-none-any")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no user or site index settings
    monkeypatch.setattr(build_layer, "runtime_dependencies", lambda: [probe, "dunning_layer_pure"])
    layer = tmp_path / "layer"
    # When the real pip runs the command for Python 3.14
    install_dependencies(layer, "3.14")
    # Then the arm64 CPython 3.14 wheel is installed into <layer>/python, not a newer one
    site = layer / "python"
    assert (
        site / probe / "__init__.py"
    ).read_text() == 'TAG = "cp314-cp314-manylinux2014_aarch64"\n'
    assert sorted(p.name for p in site.glob("*.dist-info")) == [
        "dunning_layer_probe-1.0.dist-info",
        "dunning_layer_pure-1.0.dist-info",
    ]
    # And the console script pip wrote is dropped, with no bytecode of this interpreter
    assert not (site / "bin").exists()
    assert not list(site.rglob("*.pyc"))
