"""A real S3-compatible server on loopback: moto's standalone server, which can be stopped and restarted."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from .processes import free_port, start_server, stop_server

BUCKET = "calabi-archive"
REGION = "us-east-1"


class MotoServer:
    """``moto_server`` on a fixed loopback port; ``stop`` and ``start`` simulate an S3 outage.

    moto keeps its objects in memory, so a restart comes back empty and the
    bucket is created again, as after a real outage the bucket would still be there.
    """

    def __init__(self, log_path: Path) -> None:
        binary = shutil.which("moto_server")
        if binary is None:
            pytest.fail("moto_server is not installed; run the README's test command, which installs it")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    def start(self) -> None:
        self.process, self.log = start_server(
            [self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
            ready_url=f"{self.url}/moto-api/",
            log_path=self.log_path,
            what="moto_server",
        )
        self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)
            self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def client(self) -> Any:
        return boto3.session.Session().client("s3", region_name=REGION, endpoint_url=self.url)

    def objects(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every object under ``prefix``: key -> head (ETag, LastModified, ...)."""
        client = self.client()
        found: dict[str, dict[str, Any]] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item
        return found

    def ndjson(self, key: str) -> list[dict[str, Any]]:
        """The object's gzip-compressed NDJSON, decoded."""
        body = self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
