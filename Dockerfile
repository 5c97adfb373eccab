# Tern in a container: a multi-stage build, a small Debian runtime image, a non-root user.
#   docker build -t tern .
#   docker run -p 1883:1883 -p 9883:9883 -v tern-data:/var/lib/tern tern
# Configuration: mount a file at /etc/tern/tern.toml (see config/tern.toml), or set keys through
# the environment (TERN_<SECTION>__<KEY>, e.g. -e TERN_PERSISTENCE__ENABLED=true).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY benches benches
COPY config config
RUN cargo build --release --locked --bin tern

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/tern --shell /usr/sbin/nologin tern \
    && mkdir -p /etc/tern /var/lib/tern \
    && chown tern:tern /var/lib/tern
COPY --from=build /src/target/release/tern /usr/local/bin/tern
COPY config/tern.toml /etc/tern/tern.toml
# In a container the metrics listener must be reachable from outside it (it is loopback-only by
# default); the store lives in the volume (persistence is off unless enabled).
ENV TERN_HTTP__BIND=0.0.0.0 \
    TERN_PERSISTENCE__PATH=/var/lib/tern
USER tern
WORKDIR /var/lib/tern
VOLUME ["/var/lib/tern"]
EXPOSE 1883 9883
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tern", "--config", "/etc/tern/tern.toml"]
