#!/usr/bin/env bash
# Push the image build.sh made. Log in to the registry first (`docker login`);
# no credentials live here.
#
#   IMAGE=docker.io/you/comfy-remote-exec-worker deploy/runpod/push.sh
#
# IMAGE and TAG default as in build.sh; PUSH_LATEST=1 also tags and pushes :latest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${IMAGE:-comfy-remote-exec/worker}"
TAG="${TAG:-$(git -C "$root" describe --always 2>/dev/null || echo dev)}"

docker push "$IMAGE:$TAG"
if [[ "${PUSH_LATEST:-0}" == "1" ]]; then
  docker tag "$IMAGE:$TAG" "$IMAGE:latest"
  docker push "$IMAGE:latest"
fi
echo "pushed $IMAGE:$TAG"
