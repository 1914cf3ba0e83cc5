# Multi-stage build of the openrun service. (Not exercised by CI: no Docker engine there.)
# /var/lib/openrun/data holds the generated key file when no secrets are set: mount a volume.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin openrun

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/openrun openrun && mkdir -p /var/lib/openrun/data \
    && chown -R openrun /var/lib/openrun
COPY --from=build /src/target/release/openrun /usr/local/bin/openrun
USER openrun
WORKDIR /var/lib/openrun
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["openrun"]
CMD ["serve"]
