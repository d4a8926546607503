#!/usr/bin/env bash
# Build the Python base image from Debian packages (no container registry needed):
# debootstrap minbase + security updates + python3, python3-venv, ca-certificates,
# imported into buildah's local store as $BASE_IMAGE. Skipped when the image exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/image/lib.sh
SUITE="${DEBIAN_SUITE:-bookworm}"  # bookworm ships python3.11, the version the project targets
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
ROOT=.cache/image/rootfs-$SUITE

case "$BASE_IMAGE" in localhost/*) ;; *) echo "make-base: BASE_IMAGE=$BASE_IMAGE comes from a registry, nothing to make"; exit 0 ;; esac
need_apt buildah buildah
bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 && { echo "make-base: $BASE_IMAGE exists, skipped"; exit 0; }
need_apt debootstrap debootstrap
start=$SECONDS
trap 'tail -20 .cache/image/debootstrap.log >&2' ERR

rm -rf "$ROOT" && mkdir -p "$ROOT"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >.cache/image/debootstrap.log 2>&1
# No docs, man pages or translations from here on (as Debian's -slim images).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/excludes" <<CFG
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
  "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$ROOT/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
chroot "$ROOT" sh -ec 'export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get upgrade -y -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates
  apt-get clean' >>.cache/image/debootstrap.log 2>&1
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/* "$ROOT"/tmp/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/*
find "$ROOT/usr/share/doc" -type f ! -name copyright -delete
: >"$ROOT/etc/resolv.conf"

ctr=$(bah from scratch)
tar -C "$ROOT" -c . | tar -C "$(bah mount "$ctr")" -x
bah config --env LANG=C.UTF-8 --cmd /usr/bin/python3 --label org.opencontainers.image.description="Debian $SUITE minbase + python3" "$ctr"
bah commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null && rm -rf "$ROOT"
echo "make-base: $BASE_IMAGE in $((SECONDS - start))s, $(bah images --format '{{.Size}}' "$BASE_IMAGE") (log: .cache/image/debootstrap.log)"
