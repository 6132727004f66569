# veil: one image for every veil service of the stack (stream, sink, setup, registry serve, audit
# archive). Multi-stage: the build stage has the toolchain; the runtime stage only the binary.
FROM rust:1.95-bookworm AS build
# prost-build needs protoc; librdkafka (rdkafka's default features) builds with make and g++.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Without the devkit feature: no demo, bench or test kit in the deployed binary.
RUN cargo build --release --locked --no-default-features --bin veil \
 && strip target/release/veil

FROM debian:bookworm-slim AS runtime
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/veil --create-home veil
COPY --from=build /src/target/release/veil /usr/local/bin/veil
COPY schema-registry /etc/veil/schema-registry
USER 10001
WORKDIR /var/lib/veil
ENTRYPOINT ["/usr/local/bin/veil"]
CMD ["--help"]
