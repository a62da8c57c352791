#!/usr/bin/env bash
# Build the RunPod worker image; the build context is the repository root.
#
#   deploy/runpod/build.sh [extra docker build arguments]
#
# IMAGE (default comfy-remote-exec/worker), TAG (default `git describe --always`),
# PLATFORM (default linux/amd64, what RunPod runs), and optionally COMFYUI_REF
# and MODEL_ROOT (build args; the Dockerfile's defaults match deploy/stack.yaml).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${IMAGE:-comfy-remote-exec/worker}"
TAG="${TAG:-$(git -C "$root" describe --always 2>/dev/null || echo dev)}"
PLATFORM="${PLATFORM:-linux/amd64}"

build_args=()
if [[ -n "${COMFYUI_REF:-}" ]]; then
  build_args+=(--build-arg "COMFYUI_REF=${COMFYUI_REF}")
fi
if [[ -n "${MODEL_ROOT:-}" ]]; then
  build_args+=(--build-arg "MODEL_ROOT=${MODEL_ROOT}")
fi

docker build \
  --platform "$PLATFORM" \
  --file "$root/deploy/runpod/Dockerfile" \
  --tag "$IMAGE:$TAG" \
  ${build_args[@]+"${build_args[@]}"} \
  "$@" \
  "$root"

echo "built $IMAGE:$TAG"
