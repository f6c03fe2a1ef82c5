# The router image: `docker build -t signal-router .` (docker-compose.yml builds it too).
# Multi-stage: the builder resolves and installs the dependencies into a venv; the runtime
# stage copies only that venv and the sources, so no pip, wheels or build caches ship.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
# Installing the project pulls its pinned-range dependencies and the `router` script. The
# package copy itself is dropped: router/migrate.py finds alembic.ini and migrations/ next to
# the package, so the runtime imports the package from /app, beside them (PYTHONPATH).
RUN /opt/venv/bin/pip install . \
 && rm -rf /opt/venv/lib/python*/site-packages/router

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin router
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY router ./router
USER router
EXPOSE 8000
# Liveness only (/health): readiness (/health/ready) would mark the container unhealthy while
# PostgreSQL is away, and the router is built to heal when it returns.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]
CMD ["router", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
