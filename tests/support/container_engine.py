"""A container engine for the tests that run images: podman (or Docker), the images, and what this host needs.

Where an image cannot be pulled (no registry access), a stand-in is built:

- the Python base of the exporter's image (``python:3.11-slim``), from Debian's own
  packages with debootstrap, from the Debian source this machine's apt is configured with;
- the images ``docker-compose.yml`` pins for Prometheus, Alertmanager and Loki, under
  those very tags, from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages
  and ``../shared/bin/loki``, laid out as the upstream images are (binary, user, data
  directory, entrypoint) on a Debian base that has ``wget`` as theirs has.

The host's limits are found once: a sandbox may refuse to raise ``RLIMIT_NOFILE`` (podman
raises it by default) or refuse crun's cgroup handling; the settings that make a container
run here go into a ``containers.conf`` of the test's own (``CONTAINERS_CONF``), which every
podman command of the tests reads, podman-compose's and ``kube play``'s too.
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

import yaml

from .paths import ROOT

UPSTREAM_BASE: Final = "docker.io/library/python:3.11-slim"
STANDIN_BASE: Final = "localhost/calabi-standin-python:3.11"
STANDIN_TOOLS_BASE: Final = "localhost/calabi-standin-debian:wget"
#: containers.conf settings tried in turn until a container runs: the host's own, then what a
#: sandboxed host allows (no raising of resource limits; runc where crun refuses hybrid cgroups).
_LIMITS: Final = '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
_CANDIDATES: Final = (None, _LIMITS, _LIMITS + '[engine]\nruntime = "runc"\n')


class Unavailable(Exception):
    """No container can be built or run here; the message says why."""


@dataclass
class Engine:
    """How to call the engine here: the command and the environment its calls need."""

    command: str
    env: dict[str, str] = field(default_factory=dict)
    base: str = UPSTREAM_BASE
    notes: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # stand-in images this run made, removed at its end

    def environment(self) -> dict[str, str]:
        """This process's environment with the engine's settings, for any command that calls the engine."""
        return {**os.environ, **self.env}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.command, *args], capture_output=True, text=True, timeout=timeout, check=False, env=self.environment()
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{self.command} {' '.join(args[:2])} failed: {result.stderr[-2000:]}")
        return result

    def has_image(self, name: str) -> bool:
        return self("image", "inspect", name, check=False).returncode == 0

    def pullable(self, name: str) -> bool:
        """Whether ``name`` is here or can be pulled now (a registry answers)."""
        if self.has_image(name):
            return True
        pulled = self("pull", name, timeout=600, check=False)
        if pulled.returncode != 0:
            self.notes.append(f"cannot pull {name}: {pulled.stderr.strip().splitlines()[-1:]}")
        return pulled.returncode == 0

    def cleanup(self) -> None:
        """Remove the stand-ins this run built, newest first, and the test's containers.conf."""
        for name in reversed(self.built):
            self("rmi", "--force", name, check=False)
        conf = self.env.get("CONTAINERS_CONF")
        if conf:
            shutil.rmtree(Path(conf).parent, ignore_errors=True)


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


def _import(engine: Engine, rootfs: Path, name: str) -> None:
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            [engine.command, "import", "-", name],
            stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False, env=engine.environment(),
        )  # fmt: skip
    if imported.returncode != 0:
        raise Unavailable(f"importing the stand-in base {name} failed: {imported.stderr[-1000:]}")
    engine.built.append(name)


def build_standin_bases(engine: Engine) -> None:
    """A Debian base with ``wget`` for the servers' stand-ins, and from it the Python base of the exporter.

    One debootstrap, imported twice: first whole, then without ``wget`` (as
    ``python:3.11-slim`` has none), with pip and the host's CA certificates, so that
    pip inside a build trusts whatever the host trusts on its way to the package index.
    """
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None or os.geteuid() != 0:
        raise Unavailable("images cannot be pulled and debootstrap (as root) is not available to build stand-ins")
    uri, codename = _debian_source()
    with tempfile.TemporaryDirectory(prefix="calabi-standin-") as work:
        rootfs = Path(work) / "rootfs"
        result = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-pip,ca-certificates,wget", codename,
             str(rootfs), uri],
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise Unavailable(f"debootstrap {codename} failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")
        shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
        _import(engine, rootfs, STANDIN_TOOLS_BASE)
        (rootfs / "usr/bin/wget").unlink()
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()  # an image's own interpreter, as in python:3.11-slim
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        _import(engine, rootfs, STANDIN_BASE)
    engine.notes.append(f"built stand-in bases from Debian {codename} packages (debootstrap)")


def find_engine() -> Engine:
    """A working engine with a Python base image, or :class:`Unavailable` with the reason."""
    engine = None
    if shutil.which("podman"):
        engine = Engine("podman")
    elif shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0:
        engine = Engine("docker")
    if engine is None:
        raise Unavailable("no container engine: podman is not installed and no Docker daemon answers")
    if not engine.pullable(UPSTREAM_BASE):
        build_standin_bases(engine)
        engine.base = STANDIN_BASE
    errors = []
    candidates = _CANDIDATES if engine.command == "podman" else (None,)
    for settings in candidates:
        if settings is not None:
            conf = Path(tempfile.mkdtemp(prefix="calabi-containers-")) / "containers.conf"
            conf.write_text(settings, encoding="utf-8")
            engine.env = {"CONTAINERS_CONF": str(conf)}
        result = engine("run", "--rm", engine.base, "python3", "-c", "print(1)", check=False, timeout=120)
        if result.returncode == 0 and result.stdout.strip() == "1":
            if settings is not None:
                engine.notes.append(f"this host needs these containers.conf settings: {settings.strip()!r}")
            return engine
        errors.append(result.stderr.strip().splitlines()[-1:] or ["no output"])
        if settings is not None:
            shutil.rmtree(Path(engine.env.pop("CONTAINERS_CONF")).parent, ignore_errors=True)
    raise Unavailable(f"{engine.command} cannot run a container here: {errors}")


def build_exporter_image(engine: Engine, tag: str) -> None:
    """The exporter's image from the Dockerfile, on the base this engine has."""
    build = ["build", "--build-arg", f"BASE_IMAGE={engine.base}", "-t", tag]
    if engine.command == "podman":
        # docker format keeps HEALTHCHECK; no layer cache left behind in the host's image store
        build += ["--format", "docker", "--layers=false", "--network", "host"]
    engine(*build, str(ROOT), timeout=1800)


#: How each server the compose file pins is laid out in its upstream image, for a stand-in built from
#: the binary this machine has: where the binary goes, the user it runs as, the directory it writes,
#: and the entrypoint and command of the upstream Dockerfile.
_SERVERS: Final = {
    "prometheus": {
        "binaries": {"/bin/prometheus": "prometheus", "/bin/promtool": "promtool"},
        "files": {"/usr/share/prometheus/web": "/usr/share/prometheus/web"},  # Debian's web UI assets
        "user": "nobody",
        "data": "/prometheus",
        "entrypoint": ["/bin/prometheus"],
        "cmd": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
    },
    "alertmanager": {
        "binaries": {"/bin/alertmanager": "prometheus-alertmanager", "/bin/amtool": "amtool"},
        # Debian's build reads its default notification templates from here; upstream's embeds them.
        "files": {"/usr/share/prometheus/alertmanager": "/usr/share/prometheus/alertmanager"},
        "user": "nobody",
        "data": "/alertmanager",
        "entrypoint": ["/bin/alertmanager"],
        "cmd": ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
    },
    "loki": {
        "binaries": {"/usr/bin/loki": str(ROOT.parent / "shared" / "bin" / "loki")},
        "user": "10001",
        "data": "/loki",
        "entrypoint": ["/usr/bin/loki"],
        "cmd": ["-config.file=/etc/loki/local-config.yaml"],
    },
}


def compose_images() -> dict[str, str]:
    """The image ``docker-compose.yml`` pins for each server with a stand-in: service -> image."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    return {name: services[name]["image"] for name in _SERVERS}


def server_images(engine: Engine) -> list[str]:
    """Each image the compose file pins for Prometheus, Alertmanager and Loki: pulled, else a stand-in.

    A stand-in carries the tag the file pins (as ``docker.io/...``, where a short name
    resolves), so the compose file runs as written.
    """
    made = []
    for service, image in compose_images().items():
        qualified = image if image.count("/") > 1 else f"docker.io/{image}"
        if engine.pullable(qualified):
            continue
        if not engine.has_image(STANDIN_TOOLS_BASE):
            raise Unavailable(f"{image} cannot be pulled and there is no stand-in base to build it on")
        spec = _SERVERS[service]
        with tempfile.TemporaryDirectory(prefix=f"calabi-{service}-") as context:
            lines = [f"FROM {STANDIN_TOOLS_BASE}"]
            for target, source in spec["binaries"].items():  # type: ignore[attr-defined]
                path = Path(source) if "/" in source else shutil.which(source)
                if path is None or not Path(path).exists():
                    raise Unavailable(f"{image} cannot be pulled and {source} is not installed to stand in for it")
                shutil.copy(path, Path(context) / Path(target).name)
                lines.append(f"COPY {Path(target).name} {target}")
            for number, (target, source) in enumerate(spec.get("files", {}).items()):  # type: ignore[attr-defined]
                if Path(source).is_dir():
                    shutil.copytree(source, Path(context) / f"files-{number}")
                    lines.append(f"COPY files-{number} {target}")
            user, data = spec["user"], spec["data"]
            lines += [
                f"RUN mkdir -p {data} && chown -R {user}:{'nogroup' if user == 'nobody' else user} {data}",
                f"USER {user}",
                f"WORKDIR {data}",
                f"ENTRYPOINT {spec['entrypoint']}".replace("'", '"'),
                f"CMD {spec['cmd']}".replace("'", '"'),
            ]
            (Path(context) / "Containerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
            build = ["build", "-t", qualified, "-f", str(Path(context) / "Containerfile")]
            if engine.command == "podman":
                build += ["--format", "docker", "--layers=false"]
            engine(*build, context, timeout=600)
        engine.built.append(qualified)
        engine.notes.append(f"built a stand-in for {image} from this machine's {service}")
        made.append(qualified)
    return made
