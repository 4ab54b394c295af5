# Multi-stage build: compile in a Rust 1.95 image, run in a slim Debian bookworm as a non-root user.
# The base images are arguments: Docker Hub's by default; where Hub is out of reach, local ones
# (.ci/docker-base-images makes both from a Debian mirror and a Rust toolchain, see README,
# "Docker and air-gapped sites"). Offline: vendor first (README, "Air-gapped build"; vendor/ is
# never committed), then `docker build --network=none` builds with cargo --offline.
ARG BUILD_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Unset: cargo uses every core. A shared build host passes --build-arg CARGO_BUILD_JOBS=1.
ARG CARGO_BUILD_JOBS
COPY . .
RUN if [ -d vendor ]; then cargo build --release --locked --offline; else cargo build --release --locked; fi

FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin zerodown
# Consul over https verifies against the system roots; debian:bookworm-slim has none, and this
# copy needs no network (apt-get would).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/zerodown /usr/local/bin/zerodown
# The defaults only: no upstreams file, so a container started without one is unhealthy and
# says why, rather than proxying to itself. Mount a site's config elsewhere (README).
COPY config/zerodown.toml /etc/zerodown/zerodown.toml
USER zerodown
EXPOSE 8080
# SIGTERM drains for server.drain_timeout (30 s by default): stop with more than that, e.g.
# `docker run --stop-timeout 35` or compose's `stop_grace_period: 35s`; Docker's own 10 s kills
# slower requests (exit 137).
STOPSIGNAL SIGTERM
# /ready on the admin listener: the active pool has instances. The check reads the admin address
# from the server's own command line and config, so it follows --admin-listen and mounted configs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/zerodown", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/zerodown"]
CMD ["serve", "--config", "/etc/zerodown/zerodown.toml"]
