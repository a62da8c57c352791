#!/usr/bin/env bash
# Build the RunPod worker image; the build context is the repository root.
#
#   deploy/runpod/build.sh [extra docker build arguments]
#
# IMAGE (default comfy-remote-exec/worker), TAG (default `git describe --always`),
# PLATFORM (default linux/amd64, what RunPod runs), and optionally COMFYUI_REF
# and MODEL_ROOT (build args; the Dockerfile's defaults match deploy/stack.yaml).
# STACK: another stack file, a path relative to the repository root (e.g. one
# `python -m comfy_remote_exec.stack freeze` wrote); its comfyui repo and ref
# become COMFYUI_REPO and COMFYUI_REF unless those are set.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${IMAGE:-comfy-remote-exec/worker}"
TAG="${TAG:-$(git -C "$root" describe --always 2>/dev/null || echo dev)}"
PLATFORM="${PLATFORM:-linux/amd64}"

build_args=()
if [[ -n "${STACK:-}" ]]; then
  build_args+=(--build-arg "STACK=${STACK}")
  read -r stack_repo stack_ref < <(python3 -c 'import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))["comfyui"]
print(c["repo"], c["ref"])' "$root/$STACK")
  COMFYUI_REPO="${COMFYUI_REPO:-$stack_repo}"
  COMFYUI_REF="${COMFYUI_REF:-$stack_ref}"
fi
if [[ -n "${COMFYUI_REPO:-}" ]]; then
  build_args+=(--build-arg "COMFYUI_REPO=${COMFYUI_REPO}")
fi
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
