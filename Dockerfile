# syntax=docker/dockerfile:1
# Multi-stage build: compile with the pinned toolchain, run as a non-root user
# with the data directory as a volume.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace \
 && install -D target/release/amberd target/release/amber -t /out

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/amber --create-home amber \
 && install -d -o amber -g amber -m 0700 /var/lib/amber/data
COPY --from=build /out/amberd /out/amber /usr/local/bin/
USER amber
ENV AMBER_LISTEN=0.0.0.0:7350 \
    AMBER_DATA_DIR=/var/lib/amber/data \
    AMBER_LOG_FORMAT=json
VOLUME ["/var/lib/amber/data"]
EXPOSE 7350
# The first start on an empty volume writes the initial admin token to
# /var/lib/amber/data/initial-admin-token (0600, owned by amber): read it with
# `docker exec CONTAINER cat /var/lib/amber/data/initial-admin-token`, then
# delete it. HTTPS: mount a certificate and set AMBER_TLS_CERT, AMBER_TLS_KEY
# and, for this health check, AMBER_URL=https://127.0.0.1:7350 and
# AMBER_CA_CERT (the CA that signed it).
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/amber", "health"]
# tini forwards SIGTERM so amberd drains in-flight requests before exiting,
# and SIGHUP, on which it reads its TLS certificate again.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/amberd"]
