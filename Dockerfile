# patchbay: a release build in a slim runtime image.
#   docker build -t patchbay .
#   docker run -p 8080:8080 patchbay                      # the sandbox, as `cargo run --release`
#   docker run -p 8080:8080 -e PATCHBAY_SANDBOX__ENABLED=false -e PATCHBAY_PROVIDERS__JUICE__API_KEY=... patchbay

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY benches benches
RUN cargo build --release --locked --bin patchbay

FROM debian:bookworm-slim
# TLS roots come with the binary (webpki-roots); the image needs nothing else.
RUN useradd --system --uid 10001 patchbay
COPY --from=build /src/target/release/patchbay /usr/local/bin/patchbay
USER patchbay
ENV PATCHBAY_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/patchbay"]
