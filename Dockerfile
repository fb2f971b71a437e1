# syntax=docker/dockerfile:1
#
# Stage `pgboot`: the static pgboot binary alone, to copy into any image:
#     COPY --from=pgboot /pgboot /usr/local/bin/pgboot
# Stage `pipeline` (the default): the example service of examples/pipeline
# (FastAPI + SQLAlchemy + Alembic) started by pgboot as PID 1.

FROM rust:1.95-bookworm AS build
# musl-tools only builds the static binary; the build stage is thrown away,
# so its version is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/pgboot /pgboot

FROM scratch AS pgboot
COPY --from=build /pgboot /pgboot
ENTRYPOINT ["/pgboot"]

FROM python:3.11-slim-bookworm AS pipeline
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY examples/pipeline/requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY examples/pipeline/ ./
COPY --from=build /pgboot /usr/local/bin/pgboot
RUN useradd --system --uid 10001 app
USER 10001
# pgboot is PID 1: it waits for Postgres, runs Alembic under the advisory
# lock (or skips it when alembic_version is at head), then supervises
# uvicorn, forwarding docker stop's SIGTERM to it.
ENV PGBOOT_MIGRATE_CMD="python -m alembic upgrade head" \
    PGBOOT_GRACE_PERIOD=20s
EXPOSE 8000
ENTRYPOINT ["pgboot", "--"]
CMD ["uvicorn", "app.main:app", "--app-dir", "src", "--host", "0.0.0.0", "--port", "8000"]
