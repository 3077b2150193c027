#!/usr/bin/env bash
# Make TimeTrial's base image from Debian packages alone, where no container registry can be reached:
# debootstrap a minimal Debian bookworm (Python 3.11, venv, CA certificates and the mini suite's Debian
# data packages of scripts/debian-packages.txt) into a folder, then `docker import` it.
#   sudo bash docker/build_base.sh [--tag timetrial-base:bookworm] [--mirror http://deb.debian.org/debian]
# Needs root (debootstrap), the debootstrap package and a running Docker engine; about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="timetrial-base:bookworm"
mirror="http://deb.debian.org/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    *) echo "error: unknown argument $1 (usage: bash docker/build_base.sh [--tag NAME] [--mirror URL])" >&2; exit 2 ;;
  esac
done
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || { echo "error: no Docker engine answers (start it: sudo systemctl start docker, or sudo dockerd &)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root: sudo bash docker/build_base.sh" >&2; exit 1; }

root="$(mktemp -d /tmp/timetrial-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
include="python3,python3-venv,ca-certificates,$(grep -v '^#' scripts/debian-packages.txt | paste -sd, -)"
echo "debootstrap bookworm (minbase + $include) into $root ..."
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; echo "error: debootstrap failed (log: $root.log)" >&2; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo "docker import as $tag ..."
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' --message "debootstrap --variant=minbase bookworm ($mirror)" - "$tag"
docker run --rm --network none "$tag" python3 -c 'import sys, venv; print("base image ok: Python", sys.version.split()[0])'
