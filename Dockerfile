# syntax=docker/dockerfile:1
# The platform image: a Dagster gRPC code server for the `mlplatform.definitions`
# code location (the module workspace.yaml names). A webserver/daemon elsewhere
# loads it with `grpc_server: {host: ..., port: 4000}`; with dagster-docker's run
# launcher the runs themselves also start in this image. deploy/docker-compose.yaml
# runs its webserver, daemon and MLflow server from it too (one set of versions).
#
# Two stages: the builder has uv, the runtime stage only Python, the venv and the
# code, so uv and anything it leaves behind never ship.

FROM python:3.11-slim AS builder

# uv from PyPI, pinned: keep equal to UV_VERSION in scripts/dev.py (a test checks),
# so the image resolves uv.lock exactly as `python3 scripts/dev.py` does.
RUN pip install --no-cache-dir --disable-pip-version-check "uv==0.13.9"

# copy: the cache is a mount, so hard links into it would dangle in the image.
# compile-bytecode: the runtime user cannot write __pycache__ under /app, so
#   compile once here instead of on every start.
# python-downloads=never: use this image's interpreter, never fetch another one.
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependency layer: only the lockfile and the metadata uv reads, so editing code
# (or README.md, which only the project build below needs) does not reinstall the
# large dependency set. --frozen: install uv.lock as it is, never re-resolve, the
# same lockfile install as `python3 scripts/dev.py`.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# The code, then the project itself into the same venv (hatchling reads README.md
# as the package's long description). It stays an editable install: `mlplatform`
# finds the instance settings (dagster.yaml) beside the package, at /app, and
# workspace.yaml's working_directory `.` is /app.
COPY README.md workspace.yaml dagster.yaml ./
COPY deploy/dagster.yaml deploy/workspace.yaml ./deploy/
COPY mlplatform/ ./mlplatform/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
    && python -m compileall -q mlplatform


# The same base as the builder: the venv's python is a link to its interpreter.
FROM python:3.11-slim

# A fixed uid so volume ownership is the same on every host.
RUN groupadd --system --gid 10001 mlplatform \
    && useradd --system --uid 10001 --gid mlplatform --no-create-home \
       --home-dir /var/lib/mlplatform --shell /usr/sbin/nologin mlplatform

# MLPLATFORM_HOME holds all state (see mlplatform/paths.py); DAGSTER_HOME is the
# folder StatePaths puts inside it, as `mlplatform run` / `mlplatform ui` do.
ENV MLPLATFORM_HOME=/var/lib/mlplatform \
    DAGSTER_HOME=/var/lib/mlplatform/dagster_home \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=1

# Venv and code stay root-owned (read-only to the server); only the state folders
# belong to the runtime user. The local settings are the checkout's dagster.yaml, as
# `mlplatform` would copy them there. Mount a volume at MLPLATFORM_HOME to keep state.
# Production (deploy/docker-compose.yaml) sets DAGSTER_HOME=/opt/dagster/home, whose
# dagster.yaml is deploy/dagster.yaml; its MLflow server keeps artifacts in a volume
# at /var/lib/mlflow (created here so the volume belongs to the runtime user).
COPY --from=builder /app /app
RUN install -d -o mlplatform -g mlplatform -m 0750 \
       "$MLPLATFORM_HOME" "$DAGSTER_HOME" /opt/dagster/home /var/lib/mlflow \
    && install -o mlplatform -g mlplatform -m 0640 /app/dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && ln -s /app/deploy/dagster.yaml /opt/dagster/home/dagster.yaml

WORKDIR /app
# Numeric, so the runtime (e.g. Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001:10001

EXPOSE 4000

# Loading the definitions imports MLflow, Great Expectations and scikit-learn
# (about 10 s on 2 cores): give the server time before failed checks count.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "--port", "4000"]

# Dagster maps SIGTERM to its interrupt handler, so `docker stop` shuts the server
# down cleanly even as PID 1 (no init process needed).
CMD ["dagster", "api", "grpc", "--module-name", "mlplatform.definitions", "--host", "0.0.0.0", "--port", "4000"]
