#!/usr/bin/env bash
# Makes the base images that docker/Dockerfile and docker/compose.yml start
# FROM, on an engine that has no registry to pull them from (the test
# machines). Users pull the real ones; this is test scaffolding only, and
# the Dockerfile and compose file stay the ones users read.
#   debian:bookworm-slim      debootstrap --variant=minbase bookworm, imported
#   rust:VER-slim-bookworm    that, with gcc and libc6-dev from Debian and this
#                             machine's Rust toolchain where the official image
#                             keeps it (VER: docker/Dockerfile's RUST_VERSION)
# Both carry this machine's CA bundle, so a build inside them reaches the
# package registries the way this machine does. An image already present is
# kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

rust_version="$(sed -n 's/^ARG RUST_VERSION=//p' docker/Dockerfile)"
work="$(mktemp -d /var/tmp/gslb-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  echo "== base image debian:bookworm-slim (debootstrap)"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt" 2>/dev/null ||
    { mkdir -p "$work/rootfs/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
fi

tag="rust:${rust_version}-slim-bookworm"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  echo "== base image $tag (this machine's toolchain)"
  sysroot="$(rustc --print sysroot)"
  have="$(rustc --version | cut -d' ' -f2)"
  case "$have" in
    "$rust_version" | "$rust_version".*) ;;
    *) echo "docker/Dockerfile wants Rust $rust_version, this machine has $have" >&2; exit 1 ;;
  esac
  mkdir -p "$work/ctx/toolchain"
  # Compiler and standard library only, not the 800 MB of documentation.
  for d in bin lib libexec etc; do
    [ -e "$sysroot/$d" ] && cp -a "$sysroot/$d" "$work/ctx/toolchain/"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$work/ctx/"
  cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rustup/toolchains/$have-x86_64-unknown-linux-gnu
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rustup/toolchains/$have-x86_64-unknown-linux-gnu/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
  docker build -q -t "$tag" "$work/ctx" >/dev/null
fi
