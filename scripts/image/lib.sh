# shellcheck shell=bash
# Shared by the image scripts: one storage driver and isolation for every buildah call
# (vfs + chroot: no overlay, fuse or container engine needed; works as root in a sandbox).
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:bookworm}"
IMAGE="${IMAGE:-localhost/group-enriched-consumer:dev}"
bah() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
need_apt() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
