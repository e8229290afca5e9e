"""``calabi-exporter demo``: the exporter plus the simulator, in one command."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from .config import Config, local_url
from .simulator import run_simulator

log = logging.getLogger(__name__)


def run_demo(config: Config, *, argv_config: Path | None, seed: int, duration: float | None) -> int:
    """Serve the exporter in a child process and post simulated jobs to it until stopped."""
    command = [sys.executable, "-m", "calabi_exporter", "serve"]
    if argv_config is not None:
        command += ["--config", str(argv_config)]
    command += [
        "--listen",
        config.listen,
        "--data-dir",
        config.data_dir,
        "--workers",
        str(config.workers),
        "--threads",
        str(config.threads),
        "--log-level",
        config.log_level,
    ]
    server = subprocess.Popen(command)
    url = local_url(config.listen)
    print(f"calabi-exporter demo: metrics at {url}/metrics (Ctrl-C to stop)", flush=True)
    token = config.ingest_tokens[0] if config.ingest_tokens else None
    try:
        run_simulator(url, seed=seed, duration=duration, token=token, server=server)
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0 if server.returncode in (0, -15) else 1
