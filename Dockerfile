# Stage `pgboot`: the static pgboot binary alone, to copy into any image:
#     COPY --from=pgboot /pgboot /usr/local/bin/pgboot
# Stage `pipeline` (the default): the example service of examples/pipeline
# (FastAPI + SQLAlchemy + Alembic) started by pgboot as PID 1.
#
# Multi-arch: the binary is built (or taken) for TARGETARCH, amd64 or arm64,
# as a static musl executable:
#     docker buildx build --platform linux/amd64,linux/arm64 --target pipeline .
#
# Two ways to get the binary:
#   PGBOOT_BINARY=build (default)  compile it in the `build` stage (needs rustup
#                                  to reach its servers for the musl target);
#   PGBOOT_BINARY=dist             take dist/pgboot-*-<arch>-linux-musl from the
#                                  build context, checked against dist/SHA256SUMS
#                                  (made by scripts/release, or downloaded from a
#                                  release): no Rust toolchain, no network.
# Base images are arguments, so a registry mirror or locally built stand-ins
# can take their place (scripts/test-containers does that). pip honours
# PIP_INDEX_URL, or PIP_NO_INDEX=1 with PIP_FIND_LINKS=<a wheelhouse> for an
# air-gapped build (podman build -v <wheelhouse>:/wheelhouse:ro).

ARG PGBOOT_BINARY=build
ARG RUST_IMAGE=rust:1.95-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG TARGETARCH
# musl-tools only builds the static binary; the build stage is thrown away,
# so its version is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The build runs on the target's platform (emulated when it is not the
# builder's), so the musl target is the one of the machine it runs on.
RUN set -eu; \
    case "${TARGETARCH:-$(dpkg --print-architecture)}" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=aarch64 ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH:-}: amd64 or arm64" >&2; exit 1 ;; \
    esac; \
    rustup target add "$arch-unknown-linux-musl"; \
    cargo build --release --locked --target "$arch-unknown-linux-musl"; \
    mkdir /out; \
    cp "target/$arch-unknown-linux-musl/release/pgboot" /out/pgboot

FROM ${DEBIAN_IMAGE} AS dist
ARG TARGETARCH
WORKDIR /dist
COPY dist/ ./
RUN set -eu; \
    case "${TARGETARCH:-$(dpkg --print-architecture)}" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=aarch64 ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH:-}: amd64 or arm64" >&2; exit 1 ;; \
    esac; \
    set -- pgboot-*-"$arch"-linux-musl; \
    if [ "$#" -ne 1 ] || [ ! -f "$1" ] || ! grep -q "  $1\$" SHA256SUMS; then \
        echo "dist/ must hold one pgboot-VERSION-$arch-linux-musl listed in SHA256SUMS (scripts/release)" >&2; \
        exit 1; \
    fi; \
    sha256sum --check --strict --ignore-missing SHA256SUMS; \
    mkdir /out; \
    install -m 0755 "$1" /out/pgboot

# The stage named by PGBOOT_BINARY; unused stages are skipped by BuildKit and
# by buildah/podman, so `dist` builds need neither Rust nor network.
FROM ${PGBOOT_BINARY} AS binary

FROM scratch AS pgboot
COPY --from=binary /out/pgboot /pgboot
ENTRYPOINT ["/pgboot"]

FROM ${PYTHON_IMAGE} AS pipeline
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Optional pip settings for the install below (a mirror, or a wheelhouse).
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /app
COPY examples/pipeline/requirements.lock ./
# A venv, not the system Python: works alike on python:* and Debian's
# python3 (which refuses system-wide pip installs, PEP 668). Every package,
# transitive ones included, is pinned with its hashes.
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
COPY examples/pipeline/ ./
COPY --from=binary /out/pgboot /usr/local/bin/pgboot
RUN useradd --system --uid 10001 --home-dir /app app
USER 10001
# pgboot is PID 1: it waits for Postgres, runs Alembic under the advisory
# lock (or skips it when alembic_version is at head), then supervises
# uvicorn, forwarding docker stop's SIGTERM to it.
ENV PGBOOT_MIGRATE_CMD="python -m alembic upgrade head" \
    PGBOOT_GRACE_PERIOD=20s
EXPOSE 8000
# /health answers 200 only when the database answers SELECT 1, and the
# server starts only after the migration: healthy means migrated and serving.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5m --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["pgboot", "--"]
CMD ["uvicorn", "app.main:app", "--app-dir", "src", "--host", "0.0.0.0", "--port", "8000"]
