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
# Stub sources stand in for src/ and benches/ (Cargo.toml declares a bench
# target, which cargo wants to see even when it builds only the binary).
# --locked: build exactly Cargo.lock. The registry cache mount keeps
# downloaded crates between builds without putting them into a layer;
# target/ is deliberately NOT a cache mount here, so the compiled
# dependencies stay in this layer. patches/ holds the patched boringtun that
# Cargo.toml's [patch.crates-io] points at: a dependency, so it comes in
# before the dependency build.
COPY Cargo.toml Cargo.lock ./
COPY patches ./patches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/core.rs \
    && cargo build --release --locked --bin promgate \
    && rm -rf src benches target/release/promgate* target/release/deps/promgate-* \
       target/release/deps/libpromgate-* target/release/.fingerprint/promgate-*

# Then the sources (the only other files .dockerignore lets in). touch: COPY
# keeps the files' own mtimes, which may be older than the stub build above.
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin promgate \
    && install -D -m 0755 target/release/promgate /out/promgate \
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
# 51820/udp: WireGuard. 9586/tcp: /metrics, /healthz, /readyz.
EXPOSE 51820/udp 9586/tcp
ENTRYPOINT ["/usr/local/bin/promgate", "serve", "--config", "/etc/promgate/promgate.toml"]
