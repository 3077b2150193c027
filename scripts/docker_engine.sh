#!/usr/bin/env bash
# A Docker engine for `submit.py --docker` and its tests on a Debian machine without one running:
#   bash scripts/docker_engine.sh start   # installs docker.io and debootstrap if missing, starts dockerd
#   bash scripts/docker_engine.sh stop    # stops the dockerd that `start` started (none other)
# The engine keeps its images in /var/lib/docker, so a later start finds the images built before.
set -euo pipefail
pidfile="/tmp/timetrial-dockerd.pid"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
case "${1:-}" in
  start)
    if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      echo "a Docker engine is running"; exit 0
    fi
    missing=""
    for p in docker.io debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
      echo "installing Debian packages:$missing"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
    $sudo sh -c "nohup dockerd >/tmp/timetrial-dockerd.log 2>&1 & echo \$! > $pidfile"
    for _ in $(seq 60); do
      docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && { echo "dockerd started (log: /tmp/timetrial-dockerd.log)"; exit 0; }
      sleep 1
    done
    tail -20 /tmp/timetrial-dockerd.log >&2
    echo "error: dockerd did not answer within 60 s (log: /tmp/timetrial-dockerd.log)" >&2
    exit 1 ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid="$(cat "$pidfile")"
    $sudo kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    $sudo rm -f "$pidfile" ;;
  *) echo "usage: bash scripts/docker_engine.sh start|stop" >&2; exit 2 ;;
esac
