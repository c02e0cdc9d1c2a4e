# syntax=docker/dockerfile:1
#
# ximilar-gw: the Spin application in a container, as the server card runs it
# (docker compose, 10.1.0.12:8001). Two stages:
#   build  - the official Rust image compiles the five components for
#            wasm32-wasip2, and the static health probe (deploy/healthcheck);
#   final  - the Spin v4.0.2 image with only spin.toml, the two runtime configs,
#            the five .wasm files, the probe and the entrypoint scripts.
# Build with BuildKit (the default of current Docker): the cache mounts keep the
# cargo registry and target directories between builds.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN rustup target add wasm32-wasip2
# The probe runs in the Spin image, which has no curl; a static musl binary
# needs nothing from it. Built first: it rarely changes, so this layer stays cached.
RUN case "${TARGETARCH:-amd64}" in \
        amd64) arch=x86_64 ;; \
        arm64) arch=aarch64 ;; \
        *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && rustup target add "${arch}-unknown-linux-musl" \
    && echo "${arch}-unknown-linux-musl" > /musl-target
COPY deploy/healthcheck/ deploy/healthcheck/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/deploy/healthcheck/target \
    target="$(cat /musl-target)" \
    && cargo build --locked --release --manifest-path deploy/healthcheck/Cargo.toml --target "$target" \
    && mkdir -p /out \
    && cp "deploy/healthcheck/target/$target/release/healthcheck" /out/healthcheck

COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --target wasm32-wasip2 --release -p detect -p tag -p search -p health -p metrics \
    && mkdir -p /out/target/wasm32-wasip2/release \
    && for name in detect tag search health metrics; do \
         cp "target/wasm32-wasip2/release/$name.wasm" /out/target/wasm32-wasip2/release/; \
       done

# Debian bookworm-slim plus /usr/local/bin/spin; its ENTRYPOINT is that binary.
# It runs as root and has no curl (see deploy/healthcheck).
FROM ghcr.io/spinframework/spin:v4.0.2

# A fixed non-root uid and gid (10001:10001), so a Kubernetes runAsNonRoot check
# or a host bind mount can rely on them. The group is created first with its gid:
# `useradd --system --user-group` would give the group the next free system gid
# (below 1000), not the uid. The home directory holds Wasmtime's compilation cache
# (~/.cache).
# /app/.spin is Spin's state directory: its per-component logs (.spin/logs). The
# response cache is not there: runtime-config.toml keeps it in memory,
# runtime-config.redis.toml in Redis. Created here and owned by the user, so a
# fresh named volume mounted on it inherits that owner.
RUN groupadd --system --gid 10001 spin \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/spin \
        --shell /usr/sbin/nologin spin \
    && mkdir -p /app/.spin \
    && chown 10001:10001 /app/.spin

WORKDIR /app
# spin.toml names its components as target/wasm32-wasip2/release/<name>.wasm,
# relative to itself: keep that layout. `spin up` finds ./spin.toml by itself.
COPY spin.toml runtime-config.toml runtime-config.redis.toml ./
COPY --from=build /out/target/ ./target/
COPY --from=build /out/healthcheck /usr/local/bin/healthcheck
# runtime-config.redis.toml is a template (the Redis password is not in the
# repository): the entrypoint renders it at start, see the ENTRYPOINT below.
COPY --chmod=0755 scripts/spin-entrypoint.sh scripts/render-runtime-config.sh /usr/local/bin/

USER 10001:10001
EXPOSE 8001

# /health answers 200 whenever the gateway runs (Ximilar's state is in the body,
# "ximilar_reachable"); its own Ximilar probe times out after 3 s and is reused
# for 5 s, so this costs at most one credit-free Ximilar call per interval.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8001/health"]

# Spin reads the XIMILAR_* variables (env_file: .env) once, at start.
# docker-compose.yml repeats this command to pick the runtime config
# (XGW_RUNTIME_CONFIG). The entrypoint execs `spin` with these arguments; only a
# runtime config with ${XGW_REDIS_...} placeholders is first rendered, from the
# environment, into a private file under /tmp (Spin itself does no substitution).
# runtime-config.toml reaches Spin as it is.
ENTRYPOINT ["/usr/local/bin/spin-entrypoint.sh"]
CMD ["up", "--listen", "0.0.0.0:8001", "--runtime-config-file", "runtime-config.toml"]
