# syntax=docker/dockerfile:1
#
# Builds the gateway and workers binaries; one image runs either
# (`gateway`, `workers`, `workers --setup-only`). Used by docker-compose.yml.

# ---- build ---------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# rdkafka builds the bundled librdkafka with its own configure + make (no
# cmake); zlib comes from the system through pkg-config.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential python3 libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# The whole workspace (see .dockerignore): every member crate is needed to
# resolve the workspace, and migrations/ is embedded at compile time.
COPY . .

# Registry, git and target caches survive between builds (BuildKit), so a
# code change does not rebuild librdkafka and every dependency. The target
# directory is a cache mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin gateway --bin workers \
    && mkdir -p /out \
    && cp target/release/gateway target/release/workers /out/

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates for TLS endpoints, curl for the compose healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --uid 10001 app

COPY --from=builder /out/gateway /out/workers /usr/local/bin/

USER app
ENV LOG_FORMAT=json
# gateway (GATEWAY_ADDR) and workers health/metrics (WORKERS_ADDR); both
# default to 127.0.0.1, so containers must set 0.0.0.0 addresses.
EXPOSE 8080 9091
CMD ["gateway"]
