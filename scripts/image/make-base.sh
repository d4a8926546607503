#!/usr/bin/env bash
# Build the Python base image from Debian packages (no container registry needed):
# debootstrap minbase + security updates + python3, python3-venv, ca-certificates,
# imported into buildah's local store as $BASE_IMAGE. Skipped when the image exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/image/lib.sh
SUITE="${DEBIAN_SUITE:-bookworm}"  # bookworm ships python3.11, the version the project targets
APT_ETC="${APT_ETC:-/etc/apt}"     # whose sources name the mirrors (a test points it elsewhere)

# The first enabled `deb` URI in the machine's apt sources (deb822 *.sources, one-line *.list,
# sources.list) that serves suite $1, else the first whose path ends in $2 (a Debian host on
# another release still names its mirror). The repo names no mirror host: the machine's own
# sources (or DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR) are the only place a mirror comes from.
apt_uri() {
  local suite=$1 tail=$2 f
  local files=()
  shopt -s nullglob
  files=("$APT_ETC"/sources.list.d/*.sources "$APT_ETC"/sources.list.d/*.list "$APT_ETC"/sources.list)
  shopt -u nullglob
  for f in "${files[@]}"; do
    [[ -f $f ]] || continue
    case "$f" in
      *.sources) awk -v s="$suite" -v t="$tail" 'BEGIN { RS = "" }
        { types = uris = suites = ""; enabled = "yes"; n = split($0, line, "\n")
          for (k = 1; k <= n; k++) {
            if (line[k] ~ /^#/ || !match(line[k], /^[A-Za-z-]+:/)) continue
            key = tolower(substr(line[k], 1, RLENGTH - 1)); val = substr(line[k], RLENGTH + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", val)
            if (key == "types") types = val; else if (key == "uris") uris = val
            else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
          }
          if (enabled == "no" || (" " types " ") !~ / deb /) next
          split(uris, u, /[ \t]+/); sub(/\/+$/, "", u[1])
          if ((" " suites " ") ~ (" " s " ")) print "suite", u[1]; else if (u[1] ~ (t "$")) print "path", u[1]
        }' "$f" ;;
      *) awk -v s="$suite" -v t="$tail" '$1 == "deb" {
          i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
          uri = $i; sub(/\/+$/, "", uri)
          if ($(i + 1) == s) print "suite", uri; else if (uri ~ (t "$")) print "path", uri
        }' "$f" ;;
    esac
  done | sort -s -k1,1r | awk 'NR == 1 { print $2 }'
}
MIRROR="${DEBIAN_MIRROR:-$(apt_uri "$SUITE" /debian)}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-$(apt_uri "$SUITE-security" /debian-security)}"
if [[ "${1:-}" == --print-mirrors ]]; then echo "mirror=$MIRROR security=$SECURITY"; exit 0; fi
[[ -n "$MIRROR" ]] || { echo "make-base: no Debian mirror for $SUITE in $APT_ETC's sources: set DEBIAN_MIRROR" >&2; exit 2; }
[[ -n "$SECURITY" ]] || { echo "make-base: no Debian security mirror for $SUITE-security in $APT_ETC's sources: set DEBIAN_SECURITY_MIRROR" >&2; exit 2; }
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
