"""MkDocs hooks (``mkdocs.yml``): the README is the site's home page; links between it and the pages work both ways.

On GitHub the README links ``docs/<page>.md`` and a page links ``../README.md``; in the site the README
is ``index.md`` beside the pages. These hooks rewrite exactly those two forms of link, so that the
README is written once and ``mkdocs build --strict`` checks its links with the others.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

README: Final = "README.md"
HOME: Final = "index.md"
#: A Markdown link target in the README that opens a page of docs/.
README_TO_PAGE: Final = re.compile(r"\]\(docs/")
#: A Markdown link target in a page that opens the README (with or without a heading).
PAGE_TO_README: Final = re.compile(r"\]\(\.\./README\.md(?=[#)])")


def home_page(readme: str) -> str:
    """The README as the site's ``index.md``.

    >>> home_page("[Deploy](docs/deploy.md#kubernetes)")
    '[Deploy](deploy.md#kubernetes)'
    """
    return README_TO_PAGE.sub("](", readme)


def in_site(markdown: str) -> str:
    """A page's Markdown with its links to the README pointing at the home page.

    >>> in_site("the [quick start](../README.md#quick-start), [home](../README.md)")
    'the [quick start](index.md#quick-start), [home](index.md)'
    """
    return PAGE_TO_README.sub("](" + HOME, markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    readme = Path(config.config_file_path).parent / README
    files.append(File.generated(config, HOME, content=home_page(readme.read_text(encoding="utf-8"))))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files, **_: Any) -> str:
    return in_site(markdown)
