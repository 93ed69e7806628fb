# Steward in a container: a multi-stage build (the Rust toolchain stays in the first stage),
# a slim runtime running as a non-root user, the data dir a volume. docs/operations.md
# "Containers and systemd" says how to run it; docker-compose.yml runs it with the embedded
# Virtuous simulator.
FROM rust:1-slim-bookworm AS build
# The context has no .git (.dockerignore): name the revision for `steward --version`, e.g.
#   docker build --build-arg STEWARD_BUILD_REVISION=$(git rev-parse --short=12 HEAD) .
ARG STEWARD_BUILD_REVISION=unknown
WORKDIR /src
COPY . .
RUN STEWARD_BUILD_REVISION=$STEWARD_BUILD_REVISION cargo build --release --locked --bin steward \
    && strip target/release/steward

FROM debian:bookworm-slim
# ca-certificates: HTTPS to Virtuous and the sources; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/steward --shell /usr/sbin/nologin steward \
    && mkdir -p /var/lib/steward \
    && chown steward:steward /var/lib/steward \
    && chmod 0700 /var/lib/steward
COPY --from=build /src/target/release/steward /usr/local/bin/steward
USER steward
# The store, the generated admin token and master key (unless given by the environment).
VOLUME ["/var/lib/steward"]
# Ingress faces the senders; the admin port (/v1, /metrics) is published on loopback or an
# internal network only (docker-compose.yml binds it to 127.0.0.1).
ENV STEWARD_DATA_DIR=/var/lib/steward \
    STEWARD_LISTEN=0.0.0.0:8080 \
    STEWARD_ADMIN_LISTEN=0.0.0.0:8081
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/steward"]
CMD ["serve"]
