"""The documentation site (``mkdocs.yml``): the README and every page of docs/ build with ``mkdocs build --strict``.

Strict mode turns every warning into a failure, and ``mkdocs.yml`` makes a warning of every link to a
missing page or heading and every page left out of the navigation. The build runs here as a user
runs it, into a temporary directory; the hooks that make the README the home page are checked too.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
import yaml

from tests.support.paths import ROOT

HOOKS: Final = ROOT / "scripts" / "mkdocs_hooks.py"
#: The README is a front door: what the exporter is, the two commands, a quick start and links.
README_MOST_LINES: Final = 200


def build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``project`` into ``site``."""
    command = ["build", "--strict", "--config-file", str(project / "mkdocs.yml"), "--site-dir", str(site)]
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *command],
        cwd=project,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's notice about its successor, not a finding
        capture_output=True,
        text=True,
        timeout=300,
    )


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]


def nav_pages(nav: list[object]) -> list[str]:
    """The Markdown files the navigation lists, in order."""
    found: list[str] = []
    for item in nav:
        values = item.values() if isinstance(item, dict) else [item]
        for value in values:
            found += nav_pages(value) if isinstance(value, list) else [str(value)]
    return found


def test_the_site_builds_in_strict_mode_without_a_warning(tmp_path: Path) -> None:
    result = build(ROOT, tmp_path / "site")

    assert (result.returncode, warnings(result)) == (0, []), result.stderr
    assert (tmp_path / "site" / "index.html").read_text(encoding="utf-8").count("Quick start") >= 1


def test_the_navigation_lists_the_readme_and_every_page_of_docs_once() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])

    assert pages[0] == "index.md"
    assert sorted(pages) == sorted(["index.md", *(path.name for path in (ROOT / "docs").glob("*.md"))])


@pytest.mark.parametrize(
    ("breakage", "said"),
    [
        pytest.param(
            ("alerts.md", "\nSee [the missing page](nowhere.md).\n"),
            "contains a link 'nowhere.md', but the target is not found",
            id="a link to a missing page",
        ),
        pytest.param(
            ("alerts.md", "\nSee [a missing heading](metrics.md#no-such-heading).\n"),
            "does not contain an anchor '#no-such-heading'",
            id="a link to a missing heading",
        ),
        pytest.param(
            ("stray.md", "# Stray\n"),
            'not included in the "nav" configuration:\n  - stray.md',
            id="a page left out of the navigation",
        ),
        pytest.param(
            ("../README.md", "\nSee [a missing page](docs/nowhere.md).\n"),
            "contains a link 'nowhere.md', but the target is not found",
            id="a broken link of the README",
        ),
    ],
)
def test_a_broken_link_or_a_page_left_out_fails_the_build(breakage: tuple[str, str], said: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    (project / "scripts").mkdir()
    shutil.copy(HOOKS, project / "scripts")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, project)
    page, text = breakage
    with (project / "docs" / page).open("a", encoding="utf-8") as file:
        file.write(text)

    result = build(project, tmp_path / "site")

    assert result.returncode == 1
    assert said in result.stderr


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", HOOKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hooks_examples_hold() -> None:
    result = doctest.testmod(load_hooks())

    assert (result.failed, result.attempted) == (0, 2)


def test_the_readme_stays_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert len(readme.splitlines()) <= README_MOST_LINES
    assert re.findall(r"^## (.+)$", readme, flags=re.M) == [
        "Two commands",
        "Quick start: from the demo to production",
        "Documentation",
    ]
