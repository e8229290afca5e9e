-- A SQLite store of schema version 5 (PRAGMA user_version), as the last exporter of that version made it:
-- the DDL is what exporter/store/migrations.py (plan) renders for a new store at commit 5690afb; a few rows follow.

CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    connection_name TEXT NOT NULL,
    status TEXT NOT NULL,
    connection_id TEXT,
    source TEXT,
    destination TEXT,
    job_type TEXT,
    attempt INTEGER,
    created_at REAL,
    started_at REAL,
    finished_at REAL,
    records_synced INTEGER,
    records_failed INTEGER,
    bytes_synced INTEGER,
    duration_seconds REAL,
    streams_succeeded INTEGER,
    streams_failed INTEGER,
    error_summary TEXT,
    job_url TEXT,
    active_since REAL,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL,
    export_batch INTEGER,
    job_time REAL
);
CREATE TABLE IF NOT EXISTS streams (
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT,
    records_synced INTEGER,
    records_failed INTEGER,
    bytes_synced INTEGER,
    duration_seconds REAL,
    error TEXT,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    timestamp REAL,
    stream TEXT,
    received_at REAL NOT NULL,
    dedup_key TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS connections (
    connection TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    connection_id TEXT,
    source TEXT,
    destination TEXT,
    records_synced INTEGER NOT NULL,
    records_failed INTEGER NOT NULL,
    bytes_synced INTEGER NOT NULL,
    streams_succeeded INTEGER NOT NULL,
    streams_failed INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    last_success_at REAL,
    last_failure_at REAL,
    last_job_id TEXT,
    last_job_finished_at REAL,
    last_job_status TEXT,
    last_job_records_synced INTEGER,
    last_job_records_failed INTEGER,
    last_job_bytes_synced INTEGER,
    last_job_duration_seconds REAL,
    last_job_streams_succeeded INTEGER,
    last_job_streams_failed INTEGER,
    last_job_error_summary TEXT,
    last_job_url TEXT,
    admitted INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 0,
    jobs_succeeded INTEGER NOT NULL,
    jobs_failed INTEGER NOT NULL,
    jobs_cancelled INTEGER NOT NULL,
    duration_counts_succeeded TEXT,
    duration_sum_succeeded REAL,
    duration_counts_failed TEXT,
    duration_sum_failed REAL,
    duration_counts_cancelled TEXT,
    duration_sum_cancelled REAL
);
CREATE TABLE IF NOT EXISTS connection_overflow (
    connection TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    connection_id TEXT,
    source TEXT,
    destination TEXT,
    records_synced INTEGER NOT NULL,
    records_failed INTEGER NOT NULL,
    bytes_synced INTEGER NOT NULL,
    streams_succeeded INTEGER NOT NULL,
    streams_failed INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    last_success_at REAL,
    last_failure_at REAL,
    last_job_id TEXT,
    last_job_finished_at REAL,
    last_job_status TEXT,
    last_job_records_synced INTEGER,
    last_job_records_failed INTEGER,
    last_job_bytes_synced INTEGER,
    last_job_duration_seconds REAL,
    last_job_streams_succeeded INTEGER,
    last_job_streams_failed INTEGER,
    last_job_error_summary TEXT,
    last_job_url TEXT,
    admitted INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 0,
    jobs_succeeded INTEGER NOT NULL,
    jobs_failed INTEGER NOT NULL,
    jobs_cancelled INTEGER NOT NULL,
    duration_counts_succeeded TEXT,
    duration_sum_succeeded REAL,
    duration_counts_failed TEXT,
    duration_sum_failed REAL,
    duration_counts_cancelled TEXT,
    duration_sum_cancelled REAL
);
CREATE TABLE IF NOT EXISTS stream_aggs (
    connection TEXT NOT NULL,
    stream TEXT NOT NULL,
    records_synced INTEGER NOT NULL,
    last_status TEXT,
    last_finished_at REAL,
    PRIMARY KEY (connection, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingest_counts (
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_counts (
    connection TEXT NOT NULL,
    family TEXT NOT NULL,
    key TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (connection, family, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (
    endpoint TEXT NOT NULL,
    field TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_limits (
    connection TEXT PRIMARY KEY,
    ratio REAL NOT NULL,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forgotten_connections (
    connection TEXT PRIMARY KEY,
    forgotten_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS new_connections (
    token TEXT NOT NULL,
    hour INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (token, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    line_id INTEGER,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    outbox_id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    line_id INTEGER,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS export_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    day TEXT NOT NULL,
    name TEXT NOT NULL,
    oldest_finished REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    exported_at REAL,
    newest_finished REAL,
    frozen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS webhook_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint TEXT PRIMARY KEY,
    blocked_until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_counts (
    endpoint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint, outcome)
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('stored_jobs', 0), ('outbox_cursor', 0), ('s3_exported_objects', 0), ('s3_failed_objects', 0), ('purged_jobs', 0), ('log_exported', 0), ('log_failed', 0), ('log_dead_lettered', 0), ('admitted_connections', 0), ('overflow_jobs_connection', 0), ('overflow_jobs_stream', 0), ('connections_version', 0) ON CONFLICT (key) DO NOTHING;
CREATE INDEX IF NOT EXISTS jobs_failed_by_connection ON jobs (connection_name, finished_at) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (status, connection_name, active_since) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_status_time ON jobs (status, job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_connection_time ON jobs (connection_name, job_time, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_export_batch ON jobs (export_batch) WHERE export_batch IS NOT NULL;
CREATE INDEX IF NOT EXISTS log_lines_by_job ON log_lines (job_id, id);
CREATE INDEX IF NOT EXISTS connections_waiting ON connections (first_seen, connection) WHERE NOT admitted;
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (dead_at);
CREATE INDEX IF NOT EXISTS export_batches_waiting ON export_batches (id) WHERE exported_at IS NULL;
CREATE INDEX IF NOT EXISTS webhook_queue_by_job ON webhook_queue (endpoint, job_id, id);
CREATE INDEX IF NOT EXISTS webhook_dead_letters_by_time ON webhook_dead_letters (dead_at);

INSERT INTO jobs (job_id, connection_name, status, created_at, started_at, finished_at, records_synced,
    duration_seconds, streams_succeeded, streams_failed, first_seen, updated_at, export_batch, job_time)
VALUES ('job-1', 'salesforce', 'succeeded', 1775460000.0, 1775460060.0, 1775460120.0, 42, 60.0, 1, 0,
    1775460000.5, 1775460120.5, 1, 1775460000.0);
INSERT INTO jobs (job_id, connection_name, status, started_at, active_since, first_seen, updated_at, export_batch, job_time)
VALUES ('job-2', 'hubspot', 'running', 1775460300.0, 1775460300.0, 1775460301.0, 1775460301.0, NULL, 1775460300.0);
INSERT INTO streams (job_id, name, position, status, records_synced) VALUES ('job-1', 'Account', 0, 'succeeded', 42);
INSERT INTO log_lines (job_id, timestamp, received_at, level, message, stream, dedup_key)
VALUES ('job-1', 1775460100.0, 1775460121.0, 'INFO', 'Syncing stream: Account', 'Account', 'line-1');
INSERT INTO connections (connection, first_seen, records_synced, records_failed, bytes_synced, streams_succeeded,
    streams_failed, consecutive_failures, jobs_succeeded, jobs_failed, jobs_cancelled, admitted, version)
VALUES ('salesforce', 1775460000.5, 42, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1), ('hubspot', 1775460301.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1);
INSERT INTO stream_aggs (connection, stream, records_synced, last_status, last_finished_at)
VALUES ('salesforce', 'Account', 42, 'succeeded', 1775460120.0);
UPDATE meta SET value = 2 WHERE key = 'stored_jobs';
INSERT INTO export_batches (day, name, oldest_finished, version, newest_finished, frozen) VALUES ('2026-04-06', 'jobs/2026-04-06/20260406T070000Z.jsonl.gz', 1775460120.0, 1, 1775460120.0, 0);
UPDATE meta SET value = 2 WHERE key IN ('admitted_connections', 'connections_version');

PRAGMA user_version = 5;
