"""The fenced examples of the Markdown documents: where each is, the commands it holds, the answers it shows.

Pure helpers for ``tests/integration/test_readme_examples.py``: reading fences and the ``<!-- example: ... -->``
marks right above them, splitting a shell block into whole commands (bash itself says when a
command is complete), reading an answer the way the README writes it (JSON where a bare ``...``
elides), and running blocks one after another in bash as a user's terminal would.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

FENCE: Final = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^`]*)$")
HEADING: Final = re.compile(r"^#{1,6} +(?P<title>.+?) *$")
MARK: Final = re.compile(r"^\s*<!--\s*example:\s*(?P<text>.*?)\s*-->\s*$")
#: Info strings of blocks that hold shell commands (an untagged block counts as one).
SHELL_TAGS: Final = frozenset({"", "sh", "bash", "shell", "console", "zsh", "shell-session"})
#: What a bare ``...`` of an answer stands for, once read: any members, items or value.
ANY: Final = "\u2026"
#: ``NAME=...`` at the start of a command: a shell variable the following blocks may use.
ASSIGNMENT: Final = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=")
RECORD_SEPARATOR: Final = "\x1e"  # marks where each command's output starts; never in an answer


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown document."""

    path: str  # relative to the repository
    line: int  # of the opening fence, from 1
    tag: str  # the info string's first word, "" when untagged
    heading: str  # the nearest heading above it
    text: str  # the body, without the fence's indentation
    mark: str | None  # the text of an ``<!-- example: ... -->`` comment on the line above the fence

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line} ({self.heading})"


def blocks(document: Path, root: Path) -> list[Block]:
    """Every fenced block of ``document``, in order."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    heading = ""
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            title = HEADING.match(lines[index])
            if title is not None:
                heading = title["title"]
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end].removeprefix(indent))
            end += 1
        above = MARK.match(lines[index - 1]) if index > 0 else None
        found.append(
            Block(
                path=str(document.relative_to(root)),
                line=index + 1,
                tag=(opening["info"].split() or [""])[0],
                heading=heading,
                text="\n".join(body) + "\n",
                mark=None if above is None else above["text"],
            )
        )
        index = end + 1
    return found


@dataclass(frozen=True)
class Step:
    """One whole command of a shell block and the answer the comment lines below it show."""

    command: str
    expected: str | None  # those lines without their ``#``, when the first opens JSON (``# {`` or ``# [``)

    @property
    def variable(self) -> str | None:
        """The shell variable the command sets, if it is an assignment."""
        assignment = ASSIGNMENT.match(self.command)
        return None if assignment is None else assignment["name"]


@functools.cache
def complete(command: str) -> bool:
    """Whether bash reads ``command`` as whole: no open quote, here-document or trailing backslash."""
    if command.rstrip("\n").endswith("\\"):
        return False
    check = subprocess.run(["bash", "-n"], input=command, capture_output=True, text=True, timeout=30)
    return check.returncode == 0 and not check.stderr


def steps(text: str) -> list[Step]:
    r"""The commands of a shell block, each with the answer shown below it (if any).

    >>> [(s.command, s.expected) for s in steps("A=1  # one\necho '{\n}'\n# {}\n# prose\n")]
    [('A=1  # one', None), ("echo '{\n}'", '{}\nprose')]
    """
    found: list[Step] = []
    pending: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending.append(line)
        command = "\n".join(pending)
        if not complete(command + "\n"):
            continue
        pending = []
        comments: list[str] = []
        while index < len(lines) and lines[index].lstrip().startswith("#"):
            comments.append(lines[index].lstrip().removeprefix("#").removeprefix(" "))
            index += 1
        answers = bool(comments) and comments[0].startswith(("{", "["))
        found.append(Step(command, "\n".join(comments) if answers else None))
    if pending:
        raise ValueError("an incomplete command at the end of the block: " + "\n".join(pending))
    return found


def shown_answer(text: str) -> Any:
    r"""An answer as the README shows it: JSON in which a bare ``...`` elides.

    ``...`` as a member (``{"a": 1, ...}``) leaves the object open to other members, as an item
    the array open to more items, as a value (``"b": ...``) stands for any value; inside a string
    (``"https://..."``) it stands for any text there.

    >>> shown_answer('{"a": [1, ...], "b": ..., ...}')
    {'a': [1, '…'], 'b': '…', '…': '…'}
    """
    out: list[str] = []
    stack: list[str] = []
    last = ""
    in_string = escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                last = '"'
            index += 1
            continue
        if text.startswith("...", index):
            if last == ":" or not stack:
                out.append(json.dumps(ANY))
            elif stack[-1] == "{":
                out.append(f"{json.dumps(ANY)}: {json.dumps(ANY)}")
            else:
                out.append(json.dumps(ANY))
            last = '"'
            index += 3
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
        if not char.isspace():
            last = char
        out.append(char)
        index += 1
    return json.loads("".join(out))


def differences(shown: Any, actual: Any, where: str = "answer") -> list[str]:
    """How ``actual`` differs from an answer read by :func:`shown_answer` (empty: it matches).

    >>> differences(shown_answer('{"url": "https://...", ...}'), {"url": "https://x", "id": 3})
    []
    >>> differences(shown_answer('{"n": 1}'), {"n": 2, "m": 0})
    ['answer.m: in the answer, not shown', 'answer.n: shown 1, got 2']
    """
    if shown == ANY:
        return []
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{where}: shown an object, got {actual!r}"]
        keys = set(shown) - {ANY}
        found = [f"{where}.{key}: shown, not in the answer" for key in sorted(keys - set(actual))]
        if ANY not in shown:
            found += [f"{where}.{key}: in the answer, not shown" for key in sorted(set(actual) - keys)]
        for key in sorted(keys & set(actual)):
            found += differences(shown[key], actual[key], f"{where}.{key}")
        return found
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return [f"{where}: shown a list, got {actual!r}"]
        items = [item for item in shown if item != ANY]
        if len(actual) < len(items) or (ANY not in shown and len(actual) != len(items)):
            return [f"{where}: shown {len(items)} items, got {len(actual)}"]
        return [d for i, item in enumerate(items) for d in differences(item, actual[i], f"{where}[{i}]")]
    if isinstance(shown, str) and "..." in shown:
        pattern = ".*".join(re.escape(part) for part in shown.split("..."))
        if isinstance(actual, str) and re.fullmatch(pattern, actual, flags=re.S):
            return []
        return [f"{where}: shown {shown!r}, got {actual!r}"]
    if shown != actual or isinstance(shown, bool) != isinstance(actual, bool):
        return [f"{where}: shown {shown!r}, got {actual!r}"]
    return []


@dataclass(frozen=True)
class Ran:
    """A command of a block as it ran: what it printed, and the answer shown below it with the shell's values."""

    block: Block
    step: Step
    output: str
    shown: str | None


@dataclass
class Terminal:
    """One user's shell: blocks run one after another, each with ``bash -euo pipefail``, keeping their variables.

    ``rewrite`` changes each command before it runs (the test server's address for 9188). An
    answer shown below a command is expanded by the same shell right after it, so ``$START`` in
    it is the value the block set.
    """

    cwd: Path
    env: dict[str, str]
    rewrite: Callable[[str], str]
    variables: set[str] = field(default_factory=set)

    @property
    def saved(self) -> Path:
        return self.cwd / ".shell-variables"

    def run(self, block: Block) -> list[Ran]:
        commands = steps(block.text)
        self.variables |= {step.variable for step in commands if step.variable is not None}
        script = [f"source {self.saved}"] if self.saved.exists() else []
        for number, step in enumerate(commands):
            script.append(f"printf '\\n{RECORD_SEPARATOR}output {number}\\n'")
            script.append(self.rewrite(step.command))
            if step.expected is not None:
                script.append(f"printf '\\n{RECORD_SEPARATOR}shown {number}\\n'")
                script.append(f"cat <<CALABI_SHOWN_ANSWER\n{step.expected}\nCALABI_SHOWN_ANSWER")
        script.append(f"printf '\\n{RECORD_SEPARATOR}end\\n'")
        names = " ".join(sorted(self.variables))
        script.append(f'for name in {names}; do if [[ -v $name ]]; then declare -p "$name"; fi; done > {self.saved}')
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            encoding="utf-8",
            timeout=120,
        )
        parts = _parts(result.stdout)
        if result.returncode != 0:
            last = max((n for kind, n in parts if kind == "output"), default=0)
            raise AssertionError(
                f"{block.where}: `{commands[last].command}` failed (exit {result.returncode}): "
                f"{result.stderr.strip()} {parts.get(('output', last), '')}"
            )
        return [
            Ran(block, step, parts[("output", n)], parts.get(("shown", n)) if step.expected is not None else None)
            for n, step in enumerate(commands)
        ]


def _parts(stdout: str) -> dict[tuple[str, int], str]:
    """The printed output split at the record separators: (kind, command number) -> text."""
    parts: dict[tuple[str, int], str] = {}
    for chunk in stdout.split(RECORD_SEPARATOR)[1:]:
        header, _, text = chunk.partition("\n")
        kind, _, number = header.partition(" ")
        if kind != "end":
            parts[(kind, int(number))] = text.strip()
    return parts
