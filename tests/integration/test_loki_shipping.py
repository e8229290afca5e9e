"""Job logs reach a real Loki whole, whatever order they arrive in: Loki decides what "accepted" means."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import Config
from calabi_exporter.logship import LogShipper
from calabi_exporter.simulator import CONNECTIONS as SIMULATED
from calabi_exporter.simulator import backfill
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339, parse_rfc3339
from calabi_exporter.web import create_app
from flask.testing import FlaskClient

from tests.support.exporter_process import ExporterProcess
from tests.support.job_history import CONNECTIONS, DAY, HistoryJob, big_job, history, post_records_then_logs
from tests.support.loki_server import Entry, Loki, ship_everything, true_time
from tests.support.paths import DATA
from tests.support.processes import environment_without_calabi, free_port
from tests.support.samples import parse_samples
from tests.support.waiting import wait_until


def job_entries(loki: Loki, service: str, job_id: str, now: float) -> list[Entry]:
    found = loki.entries(f'{{service_name="{service}"}} | job_id="{job_id}"', start=now - 9 * DAY, end=now + 3600)
    return sorted(found, key=lambda e: (true_time(e), e.labels.get("event") == "job_summary"))


def assert_whole_in_loki(loki: Loki, service: str, jobs: list[HistoryJob], now: float) -> None:
    """Every line and the summary of every job, in true-time order, each once."""
    expected = sum(len(j.lines) + 1 for j in jobs)
    loki.flush(f'{{service_name="{service}"}}', expected=expected, at=now + 3600, days=9)
    for job in jobs:
        entries = job_entries(loki, service, job.job_id, now)
        lines = [(round(true_time(e), 3), e.line) for e in entries if e.labels["event"] == "log"]
        summaries = [e for e in entries if e.labels["event"] == "job_summary"]
        assert lines == list(job.lines), job.job_id
        assert [s.labels["finished_at"] for s in summaries] == [job.record["finished_at"]], job.job_id
        assert entries[-1] is summaries[0], job.job_id


@pytest.fixture
def shipping_to(tmp_path: Path) -> Iterator[Callable[..., tuple[FlaskClient, LogShipper, Store]]]:
    opened: list[tuple[LogShipper, Store]] = []

    def open_(loki: Loki, service: str, **settings: object) -> tuple[FlaskClient, LogShipper, Store]:
        config = Config(
            data_dir=str(tmp_path / service),
            otlp_logs_endpoint=loki.otlp_url,
            service_name=service,
            service_instance_id="exporter-1",
            **settings,  # type: ignore[arg-type]
        )
        store = Store.sqlite(config.data_path, outbox=True)
        shipper = LogShipper(store, config)
        opened.append((shipper, store))
        return create_app(config, store=store).test_client(), shipper, store

    yield open_
    for shipper, store in opened:
        shipper.stop()
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("mapping", ["project", "default"])
def test_a_week_of_history_posted_records_first_reaches_loki_whole_and_in_true_time_order(
    mapping: str, lokis: dict[str, Loki], shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    loki = lokis[mapping]
    service = f"calabi-week-{mapping}"
    now = time.time()
    jobs = history(now)
    ancient = history(now - 7 * DAY - 3 * 3600, days=0.5, connections=CONNECTIONS[:1], per_connection=1, seed=9)
    ancient = [HistoryJob({**j.record, "job_id": "job-ancient"}, j.lines) for j in ancient]
    client, shipper, store = shipping_to(loki, service)

    post_records_then_logs(client, "", jobs + ancient)
    ship_everything(shipper, store)

    assert_whole_in_loki(loki, service, jobs, now)
    lines = sum(len(j.lines) for j in jobs)
    dead = store.outbox.dead_letters()
    assert {job_id for _, job_id, _ in dead} == {"job-ancient"}
    assert len(dead) == len(ancient[0].lines) + 1  # its lines and its summary
    assert {reason for _, _, reason in dead} == {"older than log_max_age_seconds (601200 s), which Loki refuses"}
    assert job_entries(loki, service, "job-ancient", now) == []
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_exporter_log_records_total", outcome="exported") == lines + len(jobs)
    assert samples.value("calabi_exporter_log_records_total", outcome="dead_lettered") == len(dead)
    assert samples.value("calabi_exporter_log_outbox_records") == 0


def one_job(job_id: str, start: float, count: int, step: float) -> HistoryJob:
    lines = tuple((round(start + i * step, 3), f"line {i} of {job_id}") for i in range(count))
    record = {
        "job_id": job_id,
        "connection_name": "Stripe → Postgres",
        "status": "succeeded",
        "started_at": format_rfc3339(start),
        "finished_at": format_rfc3339(lines[-1][0] + 1),
    }
    return HistoryJob(record, lines)


def test_lines_older_than_most_of_the_window_go_at_that_age_with_their_true_time_and_recent_ones_at_their_own(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    # A line a minute for the last two hours, each 30 s off the minute: none is at the horizon while shipping.
    job = one_job("job-late", now - 7200 + 30, 120, 60.0)
    client, shipper, store = shipping_to(loki, "calabi-late")

    post_records_then_logs(client, "", [job])
    ship_everything(shipper, store)
    shipped = time.time()
    loki.flush('{service_name="calabi-late"}', expected=121, at=now + 3600, days=1)

    entries = job_entries(loki, "calabi-late", job.job_id, now)
    horizon = now - 3600 * 5 / 6
    late = [e for e in entries if "log_time" in e.labels]
    assert [e.labels["log_time"] for e in late] == [format_rfc3339(at) for at, _ in job.lines if at < horizon]
    times = [e.ns for e in late]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert now - 3000 <= times[0] / 1e9 <= shipped - 3000
    assert [(e.ns, e.line) for e in entries if "log_time" not in e.labels] == [
        *((round(at * 1e9), text) for at, text in job.lines if at >= horizon),
        (round(parse_rfc3339(str(job.record["finished_at"])) * 1e9), entries[-1].line),
    ]
    assert store.outbox.dead_letters() == []


def test_lines_loki_refuses_as_too_far_behind_are_sent_again_from_the_oldest_time_it_accepts(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    recent = one_job("job-recent", now - 300, 10, 1.0)
    behind = one_job("job-behind", now - 7200, 30, 60.0)  # 1 to 2 hours before the stream's newest entry
    # A window wider than Loki's (one hour): the exporter sends them at their own time and Loki refuses.
    client, shipper, store = shipping_to(loki, "calabi-behind", log_out_of_order_window_seconds=6 * 3600)

    post_records_then_logs(client, "", [recent])
    ship_everything(shipper, store)
    post_records_then_logs(client, "", [behind])
    ship_everything(shipper, store)
    loki.flush('{service_name="calabi-behind"}', expected=10 + 30 + 2, at=now + 3600, days=1)

    newest = max(e.ns for e in job_entries(loki, "calabi-behind", recent.job_id, now))
    entries = job_entries(loki, "calabi-behind", behind.job_id, now)
    assert [(e.labels["log_time"], e.line) for e in entries[:-1]] == [
        (format_rfc3339(at), text) for at, text in behind.lines
    ]
    times = [e.ns for e in entries]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert newest - 3600e9 <= times[0] <= newest - 3598e9  # Loki's window start, named to the second
    assert store.outbox.dead_letters() == []
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_exporter_log_records_total", outcome="exported") == 42


def post_logs(session: requests.Session, base: str, jobs: list[HistoryJob]) -> None:
    for job in jobs:
        response = session.post(
            f"{base}/api/v1/jobs/{job.job_id}/logs",
            data=job.text().encode(),
            headers={"Content-Type": "text/plain"},
            timeout=30,
        )
        assert response.status_code == 200, response.text


@pytest.mark.slow
def test_two_worker_processes_and_a_restart_ship_a_backfill_whole(
    loki: Loki, exporter_process: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    now = time.time()
    jobs = history(now, days=2, connections=CONNECTIONS[:3], per_connection=8, seed=4)
    service = "calabi-workers"
    env = {"CALABI_OTLP_LOGS_ENDPOINT": loki.otlp_url, "CALABI_SERVICE_NAME": service}
    session = requests.Session()
    first = exporter_process(workers=2, data_dir=tmp_path / "kept", env=env)
    for start in range(0, len(jobs), 10):
        response = session.post(first.url + "/api/v1/jobs", json={"jobs": [j.record for j in jobs[start : start + 10]]})
        assert response.status_code == 200
    post_logs(session, first.url, jobs[::2])
    first.stop()

    second = exporter_process(workers=2, data_dir=tmp_path / "kept", env=env)
    post_logs(session, second.url, jobs[1::2])
    wait_until(
        lambda: second.scrape().value("calabi_exporter_log_outbox_records") == 0, timeout=60, what="an empty outbox"
    )

    assert_whole_in_loki(loki, service, jobs, now)
    assert session.get(second.url + "/api/v1/logs/dead-letters", timeout=10).json()["dead_letters"] == []


@pytest.mark.slow
def test_the_demos_history_jobs_have_their_logs_in_loki(loki: Loki, tmp_path: Path) -> None:
    seed = 7
    history_jobs = backfill(SIMULATED, random.Random(seed), now=time.time())
    env = {
        **environment_without_calabi(),
        "CALABI_OTLP_LOGS_ENDPOINT": loki.otlp_url,
        "CALABI_SERVICE_NAME": "calabi-demo",
    }
    argv = [sys.executable, "-m", "calabi_exporter", "demo", "--duration", "60", "--seed", str(seed)]
    argv += ["--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "demo"), "--log-level", "warning"]
    began = time.time()
    demo = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180, check=False)
    assert demo.returncode == 0, demo.stderr.decode()[-2000:]

    shipped = [[line for line in job.logs if " DEBUG " not in line] for job in history_jobs]
    loki.flush('{service_name="calabi-demo"}', expected=sum(len(s) + 1 for s in shipped), at=time.time(), days=2)
    for job, lines in zip(history_jobs, shipped, strict=True):
        job_id = job.record["job_id"]
        found = loki.entries(
            f'{{service_name="calabi-demo"}} | job_id="{job_id}"', start=began - 2 * DAY, end=time.time()
        )
        events = sorted(e.labels["event"] for e in found)
        assert events == ["job_summary"] + ["log"] * len(lines), job_id
        assert sorted(e.line for e in found if e.labels["event"] == "log") == sorted(
            line.split(" ", 2)[2] for line in lines
        ), job_id


def test_lines_loki_finds_too_old_are_dead_lettered_with_its_reason_and_the_others_of_their_request_shipped(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    recent = one_job("job-recent", now - 300, 10, 1.0)
    ancient = one_job("job-ancient", now - 7 * DAY - 3 * 3600, 5, 60.0)  # past Loki's 168 h
    behind = one_job("job-behind", now - 7200, 30, 60.0)
    # Limits wider than Loki's, so that it is Loki that refuses: the ancient lines before their stream
    # (too old), the others in it (too far behind), all in one request.
    client, shipper, store = shipping_to(
        loki, "calabi-too-old", log_max_age_seconds=8 * DAY, log_out_of_order_window_seconds=10 * DAY
    )

    post_records_then_logs(client, "", [recent])
    ship_everything(shipper, store)
    post_records_then_logs(client, "", [ancient, behind])
    ship_everything(shipper, store)
    loki.flush('{service_name="calabi-too-old"}', expected=10 + 30 + 2, at=now + 3600, days=1)

    dead = store.outbox.dead_letters()
    assert sorted(job_id for _, job_id, _ in dead) == ["job-ancient"] * 6  # its lines and its summary
    assert all(
        reason.startswith("refused by the receiver (HTTP 400): entry for stream") and "has timestamp too old" in reason
        for _, _, reason in dead
    ), dead
    entries = job_entries(loki, "calabi-too-old", behind.job_id, now)
    assert [(e.labels["log_time"], e.line) for e in entries[:-1]] == [
        (format_rfc3339(at), text) for at, text in behind.lines
    ]
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_exporter_log_records_total", outcome="exported") == 42
    assert samples.value("calabi_exporter_log_records_total", outcome="dead_lettered") == 6


def count_of(loki: Loki, service: str, job_id: str, now: float) -> int:
    return loki.count(f'{{service_name="{service}"}} | job_id="{job_id}"', at=now + 3600, days=1)


def test_a_job_of_1000_lines_of_5_kb_reaches_loki_whole_in_requests_under_its_4_mib_limit(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    job = big_job("job-big", "Stripe → Postgres", now)
    client, shipper, store = shipping_to(loki, "calabi-big")

    post_records_then_logs(client, "", [job])
    ship_everything(shipper, store, steps=40)
    loki.flush('{service_name="calabi-big"}', expected=1001, at=now + 3600, days=1)

    assert count_of(loki, "calabi-big", job.job_id, now) == 1001
    assert store.outbox.dead_letters() == []
    samples = parse_samples(client.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_exporter_log_records_total", outcome="exported") == 1001


def test_a_request_loki_finds_too_large_is_split_in_halves_until_it_takes_them(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    job = big_job("job-split", "Stripe → Postgres", now)
    # A limit above Loki's: the whole job goes in one request, which Loki answers 503 ResourceExhausted.
    client, shipper, store = shipping_to(loki, "calabi-split", otlp_max_request_bytes=16 * 1024 * 1024)

    post_records_then_logs(client, "", [job])
    ship_everything(shipper, store, steps=40)
    loki.flush('{service_name="calabi-split"}', expected=1001, at=now + 3600, days=1)

    assert count_of(loki, "calabi-split", job.job_id, now) == 1001
    assert store.outbox.dead_letters() == []


def test_a_small_job_of_another_connection_reaches_loki_while_a_big_one_is_still_being_shipped(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    now = time.time()
    big = big_job("job-backlog", "Salesforce → Snowflake", now)
    small = big_job("job-small", "Stripe → Postgres", now, count=10, size=20)
    client, shipper, store = shipping_to(loki, "calabi-fair")
    post_records_then_logs(client, "", [big])
    post_records_then_logs(client, "", [small])  # queued behind the whole backlog
    assert shipper.ship_once() == 0.0  # the oldest record alone, as after every start

    assert shipper.ship_once() == 0.0

    assert count_of(loki, "calabi-fair", small.job_id, now) == 11  # its lines and its summary
    assert 1 < count_of(loki, "calabi-fair", big.job_id, now) < 1001  # the backlog: not yet whole
    assert store.outbox.read(1)[0].job.job_id == big.job_id
    ship_everything(shipper, store, steps=40)
    loki.flush('{service_name="calabi-fair"}', expected=1012, at=now + 3600, days=1)
    assert count_of(loki, "calabi-fair", big.job_id, now) == 1001
    assert store.outbox.dead_letters() == []


def test_airbyte_s_error_message_and_fivetran_s_reason_are_queryable_in_loki(
    loki: Loki, shipping_to: Callable[..., tuple[FlaskClient, LogShipper, Store]]
) -> None:
    # The vendors' own payloads (tests/data/sources/, sources in its README), dated within the last hour.
    now = time.time()
    secret = "fivetran-webhook-secret-0123456789"
    client, shipper, store = shipping_to(loki, "calabi-sources", sources_fivetran_webhook_secret=secret)
    notification = json.loads((DATA / "sources" / "airbyte" / "docs-failed-sync.json").read_bytes())
    notification["data"] |= {"startedAt": format_rfc3339(now - 3600), "finishedAt": format_rfc3339(now - 1800)}
    event = json.loads((DATA / "sources" / "fivetran" / "sync-end-failure-with-task.json").read_bytes())
    event |= {"created": format_rfc3339(now - 600), "data": {"status": "FAILURE_WITH_TASK", "reason": "Quota exceeded"}}
    signed = json.dumps(event).encode()
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()

    assert client.post("/webhooks/airbyte", json=notification).status_code == 200
    assert (
        client.post(
            "/webhooks/fivetran",
            data=signed,
            content_type="application/json",
            headers={"X-Fivetran-Signature-256": signature},
        ).status_code
        == 200
    )
    ship_everything(shipper, store)
    loki.flush('{service_name="calabi-sources"}', expected=2, at=now + 60, days=1)

    found = loki.entries('{service_name="calabi-sources"} | event="job_summary"', start=now - DAY, end=now + 60)
    assert sorted((e.labels["job_id"], e.labels["status"], e.labels["error_summary"]) for e in found) == [
        ("airbyte:9988", "failed", "Something failed (type: config_error, origin: source)"),
        ("fivetran:syn_def456", "failed", "Quota exceeded"),
    ]
