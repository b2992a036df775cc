# driftwatch agent image: `docker build -t ghcr.io/driftwatch/driftwatch:0.1.0 .`
# Build stage: Debian 12 with the same toolchain scripts/install-deps.sh installs
# (clang-19 compiles the eBPF programs, libclang for bindgen, protoc for the CRI API).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 libclang1-19 llvm-19 libbpf-dev linux-libc-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin driftwatch \
 && install -m 0755 target/release/driftwatch /driftwatch

# Runtime: Debian 12 slim (glibc, a shell and coreutils for `kubectl exec` debugging).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /driftwatch /usr/local/bin/driftwatch
# Root in the container: the chart grants only BPF, PERFMON, SYS_RESOURCE and
# SYS_PTRACE (securityContext.mode=leastPrivilege) or runs it privileged.
USER 0:0
EXPOSE 8789
ENTRYPOINT ["/usr/local/bin/driftwatch"]
CMD ["run"]
