# One image for all four Kredit services; each container picks its service with its command:
#   python -m kredit_invoicing | kredit_settlement | kredit_collections | kredit_ledger_posting
# Built by docker-compose.yml (tagged kredit:latest) and referenced by deploy/base.
#
# Plain Dockerfile syntax on purpose (no RUN --mount cache): docker-compose v1 builds with the
# classic builder, which rejects BuildKit-only instructions.
FROM python:3.11-slim

# uv version the lockfile was written with (docs/platform-notes.md); bump together with uv.lock.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# UV_PYTHON_DOWNLOADS=never: use this image's CPython 3.11, never fetch another interpreter.
# UV_COMPILE_BYTECODE=1: compile site-packages at build time; the pods run with a read-only root
# filesystem (deploy/base), so nothing can be written at run time anyway.
# UV_LINK_MODE=copy / UV_NO_CACHE=1: no hard links into a cache that would be thrown away.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Layer 1: third-party dependencies only, from the lockfile. Copying just the workspace manifests
# first keeps this (slow) layer cached while only service code changes.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/invoicing/pyproject.toml services/invoicing/pyproject.toml
COPY services/settlement/pyproject.toml services/settlement/pyproject.toml
COPY services/collections/pyproject.toml services/collections/pyproject.toml
COPY services/ledger-posting/pyproject.toml services/ledger-posting/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-workspace

# Layer 2: the workspace members themselves (shared + the four services).
# .dockerignore keeps tests, virtualenvs and caches out of the context.
COPY shared/ shared/
COPY services/ services/
RUN uv sync --frozen --no-dev \
    && python -m compileall -q shared/src services

# Containers reach each other over the network: listen on all interfaces (the settings default,
# 127.0.0.1, is right only for the local run). Put the venv first so `python` is the project's.
ENV HTTP_HOST=0.0.0.0 \
    PATH="/app/.venv/bin:${PATH}"

# Numeric non-root user, so Kubernetes' runAsNonRoot can verify it without resolving a name.
# /var/lib/kredit: where docker-compose mounts the token signing key (a named volume takes the owner
# of the directory it is mounted on), the only data the services read besides the setup.
RUN groupadd --system --gid 10001 kredit \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent kredit \
    && mkdir -p /var/lib/kredit && chown 10001:10001 /var/lib/kredit
USER 10001:10001

# collections 8080, invoicing 8081, settlement 8082, ledger-posting 8083 (docs/contract.md).
EXPOSE 8080 8081 8082 8083

# No HEALTHCHECK here: the port differs per service, so compose and Kubernetes define the probes.
# Each service upgrades its database to the newest schema revision before it serves (Alembic,
# docs/migrations.md); replicas starting together take turns under a database lock.
CMD ["python", "-m", "kredit_collections"]
