"""What a test does when a real component it needs is not on this machine.

On a developer's machine a test that needs Loki, PostgreSQL or a container engine
skips, saying what is missing. In CI (``CI=true``) it fails instead: the test
command installs every component, so one that is missing is a broken set-up, and
a green run must mean every test ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(why: str) -> NoReturn:
    """Skip the test, or fail it in CI, because a real component is missing."""
    if in_ci():
        pytest.fail(f"CI=true and a real component is missing: {why}", pytrace=False)
    pytest.skip(why)
