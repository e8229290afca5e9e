"""Real processes on loopback: the exporter served, Prometheus, Alertmanager, Loki, S3, PostgreSQL, podman."""
