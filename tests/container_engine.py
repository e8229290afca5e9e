"""A container engine for the image test: podman (or Docker), the base image, and the flags this host needs.

Where ``python:3.11-slim`` cannot be pulled (no registry access), a stand-in
base is built from Debian's own packages with debootstrap, from the Debian
source this machine's apt is configured with, and imported as a local image.
Where no engine can run a container, :func:`find_engine` says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

UPSTREAM_BASE: Final = "docker.io/library/python:3.11-slim"
STANDIN_BASE: Final = "localhost/calabi-standin-python:3.11"
#: Flags tried in turn until a container runs: the defaults, then what a sandboxed host allows
#: (no raising of resource limits; runc where crun refuses cgroups v1/v2 hybrid mode).
_LIMITS: Final = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
_CANDIDATES: Final = (((), ()), ((), _LIMITS), (("--runtime", "runc"), _LIMITS))


class Unavailable(Exception):
    """No container can be built or run here; the message says why."""


@dataclass
class Engine:
    """How to call the engine here: global flags, and flags for ``run`` and ``build``."""

    command: str
    global_flags: tuple[str, ...] = ()
    run_flags: tuple[str, ...] = ()
    base: str = UPSTREAM_BASE
    notes: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.command, *self.global_flags, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{self.command} {' '.join(args[:2])} failed: {result.stderr[-2000:]}")
        return result


def _debian_source() -> tuple[str, str]:
    """The first Debian archive URI and the release codename this machine's apt uses."""
    release = Path("/etc/os-release").read_text(encoding="utf-8") if Path("/etc/os-release").exists() else ""
    codename = re.search(r"^VERSION_CODENAME=(\S+)", release, re.MULTILINE)
    if codename is None:
        raise Unavailable("not a Debian machine (no VERSION_CODENAME in /etc/os-release): no stand-in base")
    sources = [*sorted(Path("/etc/apt/sources.list.d").glob("*.sources")), Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for stanza in text.split("\n\n"):  # deb822
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and codename.group(1) in suites.group(1).split():
                return uris.group(1), codename.group(1)
        for line in text.splitlines():  # one-line format
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == codename.group(1):
                return parts[1], codename.group(1)
    raise Unavailable("no Debian source for this release in /etc/apt: no stand-in base")


def build_standin(engine: Engine) -> None:
    """A Python base image from Debian's packages (debootstrap), with this machine's CA certificates.

    The certificates are the host's so that pip inside a build trusts whatever
    the host trusts on its way to the package index.
    """
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None or os.geteuid() != 0:
        raise Unavailable("python:3.11-slim cannot be pulled and debootstrap (as root) is not available")
    uri, codename = _debian_source()
    with tempfile.TemporaryDirectory(prefix="calabi-standin-") as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-pip,ca-certificates", codename,
             str(rootfs), uri],
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise Unavailable(f"debootstrap {codename} failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")
        shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()  # an image's own interpreter, as in python:3.11-slim
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                [engine.command, *engine.global_flags, "import", "-", STANDIN_BASE],
                stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        if imported.returncode != 0:
            raise Unavailable(f"importing the stand-in base failed: {imported.stderr[-1000:]}")
    engine.base = STANDIN_BASE
    engine.notes.append(
        f"built a stand-in base from Debian {codename} packages (debootstrap), {UPSTREAM_BASE} unreachable"
    )


def find_engine() -> Engine:
    """A working engine with a base image, or :class:`Unavailable` with the reason."""
    engine = None
    if shutil.which("podman"):
        engine = Engine("podman")
    elif shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0:
        engine = Engine("docker")
    if engine is None:
        raise Unavailable("no container engine: podman is not installed and no Docker daemon answers")
    if engine("image", "exists" if engine.command == "podman" else "inspect", UPSTREAM_BASE, check=False).returncode:
        pulled = engine("pull", UPSTREAM_BASE, timeout=300, check=False)
        if pulled.returncode != 0:
            engine.notes.append(f"cannot pull {UPSTREAM_BASE}: {pulled.stderr.strip().splitlines()[-1:]}")
            build_standin(engine)
    errors = []
    for global_flags, run_flags in _CANDIDATES:
        engine.global_flags, engine.run_flags = global_flags, run_flags
        result = engine("run", "--rm", *run_flags, engine.base, "python3", "-c", "print(1)", check=False, timeout=120)
        if result.returncode == 0 and result.stdout.strip() == "1":
            if global_flags or run_flags:
                engine.notes.append(f"this host needs {' '.join((*global_flags, *run_flags))} to run containers")
            return engine
        errors.append(result.stderr.strip().splitlines()[-1:] or ["no output"])
    raise Unavailable(f"{engine.command} cannot run a container here: {errors}")
