#!/usr/bin/env bash
# Builds the Ferry image with buildah without pulling anything: the static
# binary is built here with the Go toolchain (the same command as the
# Dockerfile's build stage), and the Dockerfile's final stage, which is
# FROM scratch, is built from it. For machines that have buildah but no
# Docker daemon and no registry access (Ferry's development machines).
# Where Docker works, use `docker build -t ferry .` instead.
#
#   apt-get install -y buildah
#   deploy/buildah-local.sh [image-name]      # default: ferry
#
# Prints the image's size. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-ferry}
storage=(--storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# The build stage's RUN, with /out under the context directory.
VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
mkdir -p "$ctx/out"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o "$ctx/out/ferry" ./cmd/ferry
mkdir -p "$ctx/out/data" "$ctx/out/tmp"
chmod 1777 "$ctx/out/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/out/ca-certificates.crt"

# The Dockerfile's final stage, copying from the context instead of the
# build stage.
awk '/^FROM /{stage++} {lines[NR]=$0; st[NR]=stage} END{for(i=1;i<=NR;i++) if(st[i]==stage) print lines[i]}' Dockerfile |
  sed -e 's|--from=build ||' -e 's| /out/| out/|' >"$ctx/Containerfile"

buildah "${storage[@]}" bud --isolation chroot --format docker --pull=never \
  -f "$ctx/Containerfile" -t "$image" "$ctx"
buildah "${storage[@]}" images "$image"
