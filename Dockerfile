# calabi-connect-exporter: slim image, non-root, with a health check.
FROM python:3.11-slim

# The container listens on every interface, so `serve` needs CALABI_INGEST_TOKENS (or
# CALABI_ALLOW_UNAUTHENTICATED=true, an explicit choice) to start.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CALABI_LISTEN=0.0.0.0:9188 CALABI_DATA_DIR=/var/lib/calabi-exporter

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-compile . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/calabi-exporter --create-home calabi

USER calabi
WORKDIR /var/lib/calabi-exporter
VOLUME ["/var/lib/calabi-exporter"]
EXPOSE 9188
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9188/readyz', timeout=2).status != 200)"
ENTRYPOINT ["calabi-exporter"]
CMD ["serve"]
