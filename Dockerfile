# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
# Air-gapped sites: run `cargo vendor vendor > .cargo/config.toml` where the network is reachable,
# commit or copy the result, and this build runs fully offline (see README, "Air-gapped build").
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN if [ -d vendor ]; then cargo build --release --locked --offline; else cargo build --release --locked; fi

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin zerodown
COPY --from=build /src/target/release/zerodown /usr/local/bin/zerodown
COPY config/zerodown.toml config/upstreams.toml /etc/zerodown/
USER zerodown
EXPOSE 8080 9901
# No curl in the slim image: bash's /dev/tcp is enough for a GET /health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/zerodown"]
CMD ["serve", "--config", "/etc/zerodown/zerodown.toml"]
