"""The container image: its locked dependencies follow pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.paths import ROOT

LOCK = ROOT / "requirements" / "image.txt"


def locked() -> dict[str, tuple[Version, list[str]]]:
    """Each locked package's version and hashes."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"not a pinned, hashed requirement: {line!r}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", match.group(3))
        entries[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return entries


def runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(text) for text in pyproject["project"]["dependencies"]]


def test_every_locked_package_is_pinned_with_hashes() -> None:
    entries = locked()

    assert len(entries) > 20
    assert all(hashes for _, hashes in entries.values())


def test_every_dependency_of_pyproject_is_locked_at_a_version_it_allows() -> None:
    entries = locked()

    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is in pyproject.toml but not in {LOCK.name}: lock again"
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"{name} {entries[name][0]} is locked, pyproject.toml asks {requirement.specifier}: lock again"
        )
        for extra in requirement.extras:  # psycopg[binary] brings psycopg-binary
            for needed in metadata.requires(requirement.name) or []:
                needed_requirement = Requirement(needed)
                marker = needed_requirement.marker
                if marker is not None and marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed_requirement.name) in entries


def test_the_suite_runs_on_the_locked_versions_and_the_lock_holds_what_they_need() -> None:
    """The test command installs with the lock as constraints, so the installed metadata is the locked packages'."""
    entries = locked()
    for name, (version, _) in entries.items():
        installed = metadata.distribution(name)
        assert Version(installed.version) == version, f"{name}: {installed.version} installed, {version} locked"
        for text in installed.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in entries, f"{name} {version} needs {requirement.name}"
