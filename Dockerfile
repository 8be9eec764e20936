# syntax=docker/dockerfile:1
#
# promgate container image: a static-ish Rust binary on distroless, running as
# UID 65532 with no shell. Build:  docker build -t promgate:dev .
# On minikube:                     minikube image build -t promgate:dev .
#
# Base images are pinned by tag. Pin them by digest too when publishing
# (`docker buildx imagetools inspect <image>` prints it): this tree is written
# on a machine that cannot reach a container registry, so no digest was
# looked up and none is made up here.

# rust 1.95 is the toolchain the project is developed and tested with;
# bookworm matches the glibc of the debian12 runtime below.
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source or README edit.
# Stub sources stand in for src/, benches/ and the core crate's src/
# (Cargo.toml declares a bench target, which cargo wants to see even when it
# builds only the binary). tools/ is a small workspace member that seldom
# changes; it comes in whole.
# --locked: build exactly Cargo.lock. The registry cache mount keeps
# downloaded crates between builds without putting them into a layer;
# target/ is deliberately NOT a cache mount here, so the compiled
# dependencies stay in this layer. patches/ holds the patched boringtun that
# Cargo.toml's [patch.crates-io] points at: a dependency, so it comes in
# before the dependency build.
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml ./crates/core/
COPY patches ./patches
COPY tools ./tools
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    mkdir -p src benches crates/core/src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && : > crates/core/src/lib.rs \
    && echo 'fn main() {}' > benches/core.rs \
    && cargo build --release --locked --bin promgate \
    && rm -rf src benches crates/core/src target/release/promgate* \
       target/release/deps/promgate-* target/release/deps/libpromgate-* \
       target/release/deps/promgate_core-* target/release/deps/libpromgate_core-* \
       target/release/.fingerprint/promgate-*

# Then the sources (the only other files .dockerignore lets in). touch: COPY
# keeps the files' own mtimes, which may be older than the stub build above.
# The image gets the binary without its line tables (objcopy --strip-debug:
# 35 MB -> 9 MB; symbols stay, so a backtrace still names every function).
# The README's "Container image" section says why; the unstripped binary is
# target/release/promgate in the builder stage (--target builder).
COPY src ./src
COPY benches ./benches
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs crates/core/src/lib.rs \
    && cargo build --release --locked --bin promgate \
    && install -d /out \
    && objcopy --strip-debug target/release/promgate /out/promgate \
    && chmod 0755 /out/promgate \
    && install -D -m 0755 /usr/bin/sleep /out/sleep

# distroless/cc: glibc, libgcc and CA certificates, no shell, no package
# manager. :nonroot runs as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
#checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: the image has no shell or HTTP client to run one, promgate has no health subcommand, and Kubernetes ignores HEALTHCHECK anyway; it probes /healthz and /readyz on port 9586 instead.
COPY --from=builder /out/promgate /usr/local/bin/promgate
# The pods' preStop hook runs `sleep` (coreutils from the builder; it needs
# only the glibc that distroless/cc has): it keeps a terminating pod serving
# while the load balancer deregisters it. Kubernetes' native preStop `sleep`
# action cannot be used: the hashicorp/kubernetes provider has no schema for
# it (hashicorp/terraform-provider-kubernetes#2837). Still no shell.
COPY --from=builder /out/sleep /usr/local/bin/sleep
USER 65532:65532
# OCI labels. VERSION is Cargo.toml's version (tests/e2e/test_image.sh fails
# when they differ). SOURCE and REVISION are the repository and commit the
# image was built from: scripts/image passes them, and so should a publishing
# build (--build-arg SOURCE=<repository URL> --build-arg REVISION=$(git
# rev-parse HEAD)). Cargo.toml declares no licence yet, so the licence label
# says NOASSERTION (SPDX's "not stated") instead of guessing one; change both
# together.
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="promgate" \
      org.opencontainers.image.description="WireGuard gateway in front of Prometheus, in userspace: no root, no capabilities, no TUN" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="NOASSERTION" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"
# 51820/udp: WireGuard. 9586/tcp: /metrics, /healthz, /readyz.
EXPOSE 51820/udp 9586/tcp
ENTRYPOINT ["/usr/local/bin/promgate", "serve", "--config", "/etc/promgate/promgate.toml"]
