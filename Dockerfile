# The image2model server image. Three targets share one runtime stage:
#
#   runtime   (the default, last stage) builds the release binary from this
#             source tree in the official Rust image, for real deployments:
#               docker build -t image2model .
#   prebuilt  takes a binary built elsewhere; the build context is a
#             directory holding only that binary, named `image2model`:
#               docker build --target prebuilt -f Dockerfile -t image2model DIR
#             (deploy/container/check builds its image this way, so no
#             release build runs inside a container).
#
# RUNTIME_BASE picks the runtime's base image: the official
# debian:bookworm-slim by default, or one made from Debian's packages with no
# registry (deploy/container/base-images makes localhost/debian:bookworm-slim):
#   --build-arg RUNTIME_BASE=localhost/debian:bookworm-slim
ARG RUNTIME_BASE=debian:bookworm-slim

FROM ${RUNTIME_BASE} AS runtime-base
# ca-certificates for FAL and S3 over TLS; curl for the health checks;
# postgresql-client for `image2model backup`/`restore` on Postgres (bookworm's
# is 15: pg_dump refuses a newer server, so the compose file's Postgres is 15).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
       postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 image2model \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin image2model \
    && install -d -o 10001 -g 10001 -m 0750 /data
# Runs as this non-root user; the root file system can be read-only: the
# server writes only under /data (blobs, a SQLite database if used) and /tmp.
USER 10001:10001
WORKDIR /data
VOLUME /data
ENV BIND_ADDR=0.0.0.0:8000
EXPOSE 8000
# In production every request must name a host of ALLOWED_HOSTS (400
# invalid_host otherwise), the health probe included: send the first one.
# /ready answers 200 once the job store and the blob store answer.
HEALTHCHECK --interval=30s --timeout=5s CMD h="${ALLOWED_HOSTS%%,*}"; curl -fsS ${h:+-H "Host: $h"} http://127.0.0.1:8000/ready || exit 1
ENTRYPOINT ["image2model"]
CMD ["serve"]

FROM runtime-base AS prebuilt
COPY image2model /usr/local/bin/image2model

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p image2model-http --bin image2model

FROM runtime-base AS runtime
COPY --from=build /src/target/release/image2model /usr/local/bin/image2model
