# syntax=docker/dockerfile:1
# Two images from one build:
#   docker build --target runtime  -t pretrain:0.1.0 .           # the `pretrain` CLI, usable standalone
#   docker build --target operator -t pretrain-operator:0.1.0 .  # the Kubernetes operator
# Both run as the unprivileged UID/GID 65532 and hold only their binary.
# CI has no Docker engine; it lints this file (hadolint) and runs the same cargo build as the
# `build` stage below (`cargo build --release --locked --bins`).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pretrain-runtime -p pretrain-operator --bins \
 && mkdir -p /out \
 && cp target/release/pretrain target/release/pretrain-operator /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
COPY --from=build /out/pretrain /usr/local/bin/pretrain
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/pretrain"]
CMD ["--help"]

FROM debian:${DEBIAN_RELEASE}-slim AS operator
COPY --from=build /out/pretrain-operator /usr/local/bin/pretrain-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pretrain-operator"]
