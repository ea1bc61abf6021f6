# syntax=docker/dockerfile:1
# Container images of the four binaries, one target each:
#
#   docker build --target falco-operator          -t falco-operator .
#   docker build --target falco-artifact-operator -t falco-artifact-operator .
#   docker build --target falco-driver-repo       -t falco-driver-repo .
#   docker build --target falco-driver-loader     -t falco-driver-loader .
#
# The binaries are static (musl) and run on distroless `static` as non-root, except the driver
# loader, which loads kernel modules and compiles drivers: it runs as root on Debian with dkms and
# compilers, like upstream's falco-driver-loader image. `make check-images` compiles the same musl
# targets and checks every path this file refers to (there is no container engine in CI).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG TARGETARCH=amd64
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac > /tmp/target \
    && rustup target add "$(cat /tmp/target)" \
    && cargo build --release --locked --target "$(cat /tmp/target)" \
       -p falco-operator -p falco-artifact-operator -p falco-driver-repo -p falco-driver-loader --bins \
    && mkdir -p /out \
    && for bin in falco-operator falco-artifact-operator falco-driver-repo falco-driver-loader; do \
         cp "target/$(cat /tmp/target)/release/$bin" /out/; \
       done

FROM gcr.io/distroless/static-debian12:nonroot AS falco-operator
COPY --from=builder /out/falco-operator /usr/bin/falco-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/bin/falco-operator"]
CMD ["run"]

# The sidecar writes into the emptyDirs it shares with Falco; emptyDirs are writable by any user.
FROM gcr.io/distroless/static-debian12:nonroot AS falco-artifact-operator
COPY --from=builder /out/falco-artifact-operator /usr/bin/falco-artifact-operator
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/bin/falco-artifact-operator"]
CMD ["run"]

FROM gcr.io/distroless/static-debian12:nonroot AS falco-driver-repo
COPY --from=builder /out/falco-driver-repo /usr/bin/falco-driver-repo
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/bin/falco-driver-repo"]
CMD ["serve"]

# Root on purpose: insmod/rmmod need CAP_SYS_MODULE and the compile fallback writes under
# /usr/src and /lib/modules of the host root. dkms, make, gcc and the kernel build tools compile a
# kmod; clang and llvm build the legacy eBPF probe.
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS falco-driver-loader
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates dkms make gcc libc6-dev kmod libelf-dev bc flex bison clang llvm xz-utils \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/falco-driver-loader /usr/bin/falco-driver-loader
ENV HOST_ROOT=/host
ENTRYPOINT ["/usr/bin/falco-driver-loader"]
CMD ["auto"]
