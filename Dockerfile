# Multi-stage build of the image2model server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p image2model-http --bin image2model

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data image2model \
    && mkdir -p /data && chown image2model /data
COPY --from=build /src/target/release/image2model /usr/local/bin/image2model
USER image2model
WORKDIR /data
ENV BIND_ADDR=0.0.0.0:8000
EXPOSE 8000
# In production every request must name a host of ALLOWED_HOSTS (400
# invalid_host otherwise), the health probe included: send the first one.
HEALTHCHECK --interval=30s --timeout=5s CMD h="${ALLOWED_HOSTS%%,*}"; curl -fsS ${h:+-H "Host: $h"} http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["image2model"]
CMD ["serve"]
