"""Build the common layer without Docker: `python -m infra.build_layer [--target DIR]`.

`<target>/python/` receives the runtime dependencies of `pyproject.toml`
(`[project].dependencies`) as manylinux arm64 wheels for the functions'
Python version, and a copy of the `dunning` package. `--no-deps` copies the
package only (what the tests synthesize with: synthesis needs the directory,
not its wheels).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "layers" / "common" / "python" / "dunning"
PLATFORM = "manylinux2014_aarch64"  # the functions run on arm64 (Graviton)


def runtime_python_version() -> str:
    """The functions' Python version ("3.14" for python3.14), from the function factory."""
    from infra.constructs.function_factory import RUNTIME  # noqa: PLC0415 (jsii start-up)

    return RUNTIME.name.removeprefix("python")


def runtime_dependencies() -> list[str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def copy_package(target: Path) -> Path:
    """Copy the shared package to `<target>/python/dunning` (no caches)."""
    destination = target / "python" / "dunning"
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(PACKAGE, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def pip_command(target: Path, python_version: str, requirements: Sequence[str]) -> list[str]:
    """The pip invocation that puts `requirements` into `<target>/python` as wheels for
    the functions (CPython `python_version` on manylinux arm64), whatever this machine is."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",  # bytecode of this interpreter is useless to the runtime's
        "--platform",
        PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",  # wheels only: an sdist would build for this machine
        "--target",
        str(target / "python"),
        *requirements,
    ]


def install_dependencies(target: Path, python_version: str) -> None:
    command = pip_command(target, python_version, runtime_dependencies())
    subprocess.run(command, check=True)  # noqa: S603 (fixed arguments, our own interpreter)
    # Console scripts of the wheels (pybabel, jp.py): nothing imports them.
    shutil.rmtree(target / "python" / "bin", ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=REPO_ROOT / "build" / "layer")
    parser.add_argument("--no-deps", action="store_true", help="copy the package only")
    args = parser.parse_args(argv)
    target: Path = args.target
    if target.exists():
        shutil.rmtree(target)
    (target / "python").mkdir(parents=True)
    if not args.no_deps:
        install_dependencies(target, runtime_python_version())
    copy_package(target)


if __name__ == "__main__":
    main()
