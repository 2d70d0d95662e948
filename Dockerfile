# patchbay: a release build in a slim runtime image, run as a non-root user.
#   docker build -t patchbay .
#   docker run -p 127.0.0.1:8080:8080 patchbay            # the sandbox, as `cargo run --release`
#   docker run -p 127.0.0.1:8080:8080 -e PATCHBAY_SANDBOX__ENABLED=false \
#     -e PATCHBAY_PROVIDERS__JUICE__API_KEY_FILE=/run/secrets/juice patchbay
# The API listens on 8080, the admin listener (/livez, /readyz, /metrics, /quotas) on 9901.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
# Cargo.toml names the benches; they are not built.
COPY benches benches
RUN cargo build --release --locked --bin patchbay

FROM debian:bookworm-slim
# ca-certificates: the system roots for rediss:// (providers' TLS roots come with the binary).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/patchbay --create-home patchbay
COPY --from=build /src/target/release/patchbay /usr/local/bin/patchbay
USER 10001
WORKDIR /var/lib/patchbay
# The image's default is the sandbox demo, served open on purpose (patchbay refuses a non-loopback
# listener without [[clients]] otherwise); with [[clients]] configured this setting changes nothing.
ENV PATCHBAY_SERVER__LISTEN=0.0.0.0:8080 \
    PATCHBAY_SERVER__ADMIN_LISTEN=0.0.0.0:9901 \
    PATCHBAY_SERVER__ALLOW_UNAUTHENTICATED=true
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/patchbay", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/patchbay"]
