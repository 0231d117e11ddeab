# syntax=docker/dockerfile:1
#
# KernelSeal image: `kernelseal-core` (node agent, CSI provider, webhook,
# every CLI tool), the `kernelseal` command in front of it (runs `kernelseal
# exec` itself, execs kernelseal-core for every other subcommand), and
# `kernelseal-exec` (the entrypoint wrapper). The last two are statically
# linked: an init container can copy kernelseal-exec into any application
# image, and neither pays a dynamic loader at every wrapped start.
#
#   docker build -t kernelseal:0.1.0 .
#
# One image, three roles; the Kubernetes manifests (deploy/) pick the role
# with `args` and override the user:
#   - node agent (`kernelseal agent`): runs as root (runAsUser: 0) with the
#     named capabilities BPF, PERFMON, SYS_ADMIN, SYS_PTRACE, CHOWN, FOWNER,
#     DAC_OVERRIDE, KILL and hostPID (deploy/manifests/agent/daemonset.yaml
#     says why for each). With Docker alone (Docker's default set already
#     has CHOWN, FOWNER, DAC_OVERRIDE, KILL):
#       docker run -d --user 0 --pid host --cap-add BPF --cap-add PERFMON \
#         --cap-add SYS_ADMIN --cap-add SYS_PTRACE \
#         --security-opt apparmor=unconfined \
#         -v /sys/fs/bpf:/sys/fs/bpf -v /sys/kernel/security:/sys/kernel/security:ro \
#         -v /run/kernelseal:/run/kernelseal -v /etc/kernelseal:/etc/kernelseal:ro \
#         kernelseal:0.1.0
#   - CSI provider (`kernelseal csi-provider`): no capability at all; uid 0
#     only where it must create its socket in the driver's root-owned
#     directory (deploy/manifests/csi-provider/daemonset.yaml).
#   - init container copying /usr/bin/kernelseal-exec: the default user
#     below (65532, not root).

# The base images, as build arguments so that scripts/check-image can build
# this file unchanged from locally made equivalents (no public registry is
# reachable there); the defaults are the public images.
ARG RUST_IMAGE=rust:1.95-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

# ---------------------------------------------------------------- build --
# Rust 1.95 (the workspace's rust-version) on Debian trixie, the same
# release as the runtime stage, so the dynamically linked `kernelseal-core`
# finds the glibc it was built against.
FROM ${RUST_IMAGE} AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# clang + libbpf-dev: bpf/build.rs compiles the BPF-LSM programs (C, CO-RE)
# and embeds the object; llvm: llvm-strip/objdump for the BPF toolchain;
# protobuf-compiler: csi-shim's build.rs generates the provider gRPC code.
# DL3008 (pin apt versions) is ignored on purpose, here and below: Debian
# drops superseded versions from its mirrors, so pinned versions break the
# build within weeks; the base image tag pins the Debian release instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Everything that ships, from the committed Cargo.lock:
#   - kernelseal-core (BPF objects built by clang and embedded);
#   - kernelseal-exec and the kernelseal command (one crate, small) linked
#     statically (glibc crt-static), for the host triple: they then run in
#     any image, with or without a libc. (`cargo xtask static-exec` links
#     musl where its Rust std is installed: its static start-up is faster;
#     this build does not install it.) RUSTFLAGS with --target leave build
#     scripts and proc macros dynamic, as they must be.
# cargo judges a workspace crate fresh by mtimes, and COPY keeps the build
# context's: a file edited while the previous build ran is older than the
# cached outputs and would be skipped. So every file whose content differs
# from the last build's (target/sources.sha256) is touched first.
# All are stripped (the release profile keeps symbols). A static binary
# has no program interpreter (PT_INTERP); ldd cannot tell: it exits 0 for
# glibc's static PIE. The cache mounts
# keep the registry and target/ between builds; the binaries are copied out
# of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    (sha256sum --check --quiet target/sources.sha256 2>/dev/null || true) \
      | sed -n 's/: FAILED$//p' | xargs --no-run-if-empty --delimiter '\n' touch -- \
 && cargo build --release --locked -p kernelseal --bin kernelseal-core \
 && host="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p kernelseal-exec --bins \
      --target "$host" --target-dir target/static \
 && mkdir -p /out \
 && cp target/release/kernelseal-core /out/kernelseal-core \
 && cp "target/static/$host/release/kernelseal" "target/static/$host/release/kernelseal-exec" /out/ \
 && strip /out/kernelseal-core /out/kernelseal /out/kernelseal-exec \
 && for bin in kernelseal kernelseal-exec; do \
      if readelf --program-headers "/out/$bin" | grep -q INTERP; then \
        echo "$bin is not static: it names a program interpreter" >&2; exit 1; \
      fi; \
    done \
 && /out/kernelseal --version \
 && find . -path ./target -prune -o -type f -print0 | xargs -0 sha256sum > target/sources.sha256

# -------------------------------------------------------------- runtime --
FROM ${RUNTIME_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="KernelSeal" \
      org.opencontainers.image.description="Kernel-level secret protection with BPF-LSM: node agent, kernelseal-exec wrapper, Secrets Store CSI Driver provider" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0 AND GPL-2.0-only" \
      org.opencontainers.image.documentation="README.md, docs/, deploy/README.md in the source tree"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ca-certificates: TLS to Vault, AWS and the Kubernetes API (rustls reads
# the system roots). Nothing else: no shell tools beyond the base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 kernelseal \
 && useradd --system --no-log-init --uid 65532 --gid 65532 \
      --home-dir /nonexistent --shell /usr/sbin/nologin kernelseal

COPY --from=build /out/kernelseal /out/kernelseal-core /out/kernelseal-exec /usr/bin/
COPY deploy/docker/healthcheck /usr/bin/kernelseal-healthcheck

# Non-root by default; the agent's manifest sets runAsUser: 0 (see top).
USER 65532:65532

# The agent's metrics/health port (monitoring.metricsPort), the CSI
# provider's --health-addr port and the webhook's HTTPS port (--listen).
EXPOSE 9090 8095 8443

# /healthz of whichever role runs (agent :9090, CSI provider :8095); the
# webhook serves /healthz over HTTPS only, which this plain-HTTP check
# cannot speak. Kubernetes ignores HEALTHCHECK and uses the manifests'
# httpGet probes (scheme HTTPS for the webhook).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/bin/kernelseal-healthcheck"]

ENTRYPOINT ["/usr/bin/kernelseal"]
CMD ["agent", "--config", "/etc/kernelseal/config.yaml"]
