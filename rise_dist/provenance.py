"""What every run records about itself: code version and environment."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import rise_dist

_REPO = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` from git when run from a checkout, else the version."""
    try:
        sha = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return rise_dist.__version__
    return f"{rise_dist.__version__}+g{sha}{'.dirty' if dirty else ''}"


def environment() -> dict:
    """Python, platform and the versions of the libraries that decide results."""
    env = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("numpy", "torch", "ray", "optuna", "pandas", "pyarrow", "pillow"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    return env
