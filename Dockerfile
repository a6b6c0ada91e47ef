# syntax=docker/dockerfile:1.7
# One image for every service: the command picks which one runs, e.g.
#   python -m services.gateway            serve
#   python -m services.gateway migrate    apply its Alembic migrations and exit
#   python -m sandbox.clio                the Clio API v4 stand-in (local runs only)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: resolve the locked dependencies into /app/.venv -------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install "uv==${UV_VERSION}"

WORKDIR /app
# Only the lock inputs, so the dependency layer is reused until they change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# --- runtime: slim Python plus the libraries WeasyPrint loads at run time --------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 \
        libpangoft2-1.0-0 \
        libharfbuzz-subset0 \
        fonts-dejavu-core \
        fonts-liberation \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

# The root filesystem is read-only on Kubernetes: caches go to /tmp and bytecode is
# compiled at build time instead of on first import.
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    HTTP_HOST=0.0.0.0

WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY services/ services/
COPY shared/ shared/
COPY sandbox/ sandbox/
# Code stays root-owned (the app user cannot change it); only var/ is the app's to write.
RUN python -m compileall -q services shared sandbox \
    && mkdir -p /app/var \
    && chown 10001:10001 /app/var

USER 10001:10001

# gateway, sync, envelope, mailer, payments, and the Clio sandbox
EXPOSE 8000 8001 8002 8003 8004 8090

# Every service answers /health/ready on its own HTTP_PORT; slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('HTTP_PORT', '8000'), timeout=4)"]

CMD ["python", "-c", "print('usage: python -m services.{sync,envelope,mailer,payments,gateway} [migrate]'); print('       python -m sandbox.clio')"]
