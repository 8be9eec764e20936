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
COPY . .
# --locked: build exactly Cargo.lock. The cache mounts keep the registry and
# target/ between builds without putting them into a layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin promgate \
    && install -D -m 0755 target/release/promgate /out/promgate

# distroless/cc: glibc, libgcc and CA certificates, no shell, no package
# manager. :nonroot runs as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
#checkov:skip=CKV_DOCKER_2:No HEALTHCHECK: the image has no shell or HTTP client to run one, promgate has no health subcommand, and Kubernetes ignores HEALTHCHECK anyway; it probes /healthz and /readyz on port 9586 instead.
COPY --from=builder /out/promgate /usr/local/bin/promgate
USER 65532:65532
# 51820/udp: WireGuard. 9586/tcp: /metrics, /healthz, /readyz.
EXPOSE 51820/udp 9586/tcp
ENTRYPOINT ["/usr/local/bin/promgate", "serve", "--config", "/etc/promgate/promgate.toml"]
