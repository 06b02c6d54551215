# One recipe for every Python image of the stack: the gateway, worker and
# notifier, the Databricks emulator and the mail sink. Build from the
# repository root, naming the workspace package and what it needs:
#   docker build -f infra/docker/python-service.Dockerfile \
#     --build-arg PACKAGE=pipeline-api --build-arg MODULE=pipeline_api \
#     --build-arg SOURCES="services/shared services/api" --build-arg PORT=8000 .
# compose.yaml passes these for each service. PYTHON_IMAGE is any Debian-like
# image with Python 3.13 as `python`; offline mode passes a locally built one
# (infra/offline/setup.sh).
ARG PYTHON_IMAGE=python:3.13-slim

# Only the files that decide the dependency set: root pyproject.toml, uv.lock
# and every workspace member's pyproject.toml. Copying them out of the whole
# context keeps this list right when a member is added, and because the output
# changes only when one of these files does, a code change does not re-resolve
# dependencies below.
FROM ${PYTHON_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete \
    && find . -depth -type d -empty -delete

# The package's own code and the workspace members it imports (SOURCES:
# folders of the repository), and nothing else, so that a change to another
# service does not rebuild this image.
FROM ${PYTHON_IMAGE} AS sources
ARG SOURCES
WORKDIR /src
COPY services services
COPY infra infra
COPY notebooks notebooks
RUN set -eu; \
    test -n "$SOURCES" || { echo "build argument SOURCES is required" >&2; exit 1; }; \
    mkdir /keep; \
    for path in $SOURCES; do \
        test -d "$path" || { echo "SOURCES names $path, which is not a folder" >&2; exit 1; }; \
        mkdir -p "/keep/$(dirname "$path")" && cp -a "$path" "/keep/$path"; \
        if [ -d "$path/workspace" ]; then mkdir -p /keep/Workspace && cp -a "$path/workspace/." /keep/Workspace/; fi; \
    done; \
    mkdir -p /keep/notebooks /keep/Workspace

FROM ${PYTHON_IMAGE} AS build
ARG PACKAGE
# uv from PyPI rather than the ghcr.io/astral-sh/uv image: some build machines
# reach PyPI but no image registry.
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY --from=manifests /src ./
# Third-party dependencies first, in their own layer; the uv cache mount is
# shared by every image built on this machine, so a wheel downloads once.
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "$PACKAGE" || { echo "build argument PACKAGE is required" >&2; exit 1; }; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-workspace --package "$PACKAGE"
COPY --from=sources /keep ./
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --package "$PACKAGE"

FROM ${PYTHON_IMAGE}
ARG MODULE
ARG PORT
ARG HEALTHCHECK_PATH=/readyz
RUN useradd --system --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /app/.venv /app/.venv
# Data files a service reads at run time: the emulator serves the bundle's jobs
# and runs their notebooks, which the bundle names as ../../notebooks.
COPY --from=sources /keep/notebooks /app/notebooks
# Workspace files a driver holds, from a SOURCES folder's workspace/ (the emulator's sample
# data at /Workspace/Shared/pipelines/samples/); empty in the other images.
COPY --from=sources /keep/Workspace /Workspace
# The job catalogue the gateway and the worker read by default (JOB_CATALOGUE_FILE).
COPY infra/catalogue.toml /app/infra/catalogue.toml
COPY --from=sources /src/infra/databricks /app/infra/databricks
COPY infra/docker/healthcheck.py /app/healthcheck.py
# The module is fixed at build time; a one-line launcher runs it, since an
# exec-form CMD cannot expand a variable.
RUN test -n "$MODULE" && test -n "$PORT" \
    && printf '#!/bin/sh\nexec /app/.venv/bin/python -m %s "$@"\n' "$MODULE" >/app/run \
    && chmod 0755 /app/run
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:${PORT}${HEALTHCHECK_PATH}
WORKDIR /app
USER app
EXPOSE ${PORT}
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/app/.venv/bin/python", "-I", "-S", "/app/healthcheck.py"]
CMD ["/app/run"]
