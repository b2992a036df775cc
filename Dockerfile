# driftwatch agent image: `docker build -t ghcr.io/driftwatch/driftwatch:0.1.0 .`
# Build stage: Debian 12 with the same toolchain scripts/install-deps.sh installs
# (clang-19 compiles the eBPF programs, libclang for bindgen, protoc for the CRI API).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 libclang1-19 llvm-19 libbpf-dev linux-libc-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The commit, for driftwatch_build_info{git_revision} (docker build --build-arg DRIFTWATCH_GIT_REVISION=$(git rev-parse HEAD)).
ARG DRIFTWATCH_GIT_REVISION=unknown
ENV DRIFTWATCH_GIT_REVISION=$DRIFTWATCH_GIT_REVISION
# Debug sections stripped (the release profile keeps line tables: 139 MB -> 24 MB);
# symbols stay, so a panic's backtrace still names functions. scripts/build-image.sh
# does the same.
RUN cargo build --release --locked --bin driftwatch \
 && objcopy --strip-debug target/release/driftwatch /driftwatch \
 && chmod 0755 /driftwatch

# Runtime: Debian 12 slim (glibc, a shell and coreutils for `kubectl exec` debugging).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /driftwatch /usr/local/bin/driftwatch
LABEL org.opencontainers.image.title="driftwatch" \
      org.opencontainers.image.description="Per-node container drift detection agent (eBPF)" \
      org.opencontainers.image.source="https://github.com/driftwatch/driftwatch" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root in the container: the chart grants only BPF, PERFMON and SYS_PTRACE
# (securityContext.mode=leastPrivilege) or runs it privileged.
USER 0:0
EXPOSE 8789
ENTRYPOINT ["/usr/local/bin/driftwatch"]
CMD ["run"]
