#!/usr/bin/env bash
# Build TimeTrial's image (default timetrial:cpu) from docker/Dockerfile without reaching a registry:
#   bash docker/build_image.sh [--variant cpu|cuda] [--tag NAME] [--base IMAGE] [--from_index [--ca_bundle FILE]]
# By default the CPU image's base is timetrial-base:bookworm (made first by docker/build_base.sh when it
# is missing; the CUDA image's is nvidia/cuda:12.8.1-runtime-ubuntu24.04, pulled from NVIDIA's registry)
# and the Python packages of docker/requirements-<variant>.lock are downloaded here, on the host, into
# docker/wheelhouse/ (pip download, once per lock file; TORCH_INDEX_URL="" where torch's +cpu build is
# found without PyTorch's index), so `docker build` runs with --network none. A rebuild after a code
# change reuses every layer but the code's (seconds).
# --from_index: pip in the build reaches the index itself (--network host); --ca_bundle FILE is the CA
# bundle its TLS needs where a proxy intercepts it (copied into the build for that one step only).
set -euo pipefail
cd "$(dirname "$0")/.."
variant="cpu"; tag=""; base=""; from_index=""; ca_bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --from_index) from_index=1; shift ;;
    --ca_bundle) ca_bundle="$2"; shift 2 ;;
    *) echo "error: unknown argument $1 (usage: bash docker/build_image.sh [--variant cpu|cuda] [--tag NAME] [--base IMAGE] [--from_index [--ca_bundle FILE]])" >&2; exit 2 ;;
  esac
done
case "$variant" in cpu|cuda) ;; *) echo "error: --variant must be cpu or cuda, not $variant" >&2; exit 2 ;; esac
tag="${tag:-timetrial:$variant}"
# The CUDA variant's base comes from NVIDIA's registry (its Python, 3.12, is the cuda lock's).
[ -n "$base" ] || { [ "$variant" = cpu ] && base="timetrial-base:bookworm" || base="nvidia/cuda:12.8.1-runtime-ubuntu24.04"; }
lock="docker/requirements-$variant.lock"
[ -f "$lock" ] || { echo "error: $lock is missing: generate it with bash docker/lock.sh $variant (on a machine whose pip reaches PyPI and, for cuda, NVIDIA's wheels)" >&2; exit 2; }
[ -n "$ca_bundle" ] && [ ! -f "$ca_bundle" ] && { echo "error: --ca_bundle $ca_bundle is not a file" >&2; exit 2; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || { echo "error: no Docker engine answers (start it: sudo systemctl start docker, or sudo dockerd &)" >&2; exit 1; }

if [ "$base" = "timetrial-base:bookworm" ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  bash docker/build_base.sh --tag "$base"
fi

rm -f docker/build-ca/ca.crt
trap 'rm -f docker/build-ca/ca.crt' EXIT
network=(--network none)
index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
if [ -n "$from_index" ]; then
  network=(--network host)
  [ -n "$ca_bundle" ] && cp "$ca_bundle" docker/build-ca/ca.crt
  [ "$variant" = cpu ] && [ -n "$index" ] && network+=(--build-arg "PIP_EXTRA_INDEX_URL=$index")
else
  python="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
  pyver="$( [ "$variant" = cpu ] && echo 3.11 || echo 3.12 )"  # the lock's Python (docker/lock.sh)
  basever="$(docker run --rm --network none --entrypoint python3 "$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)"
  [ "$basever" = none ] || [ "$basever" = "$pyver" ] || { echo "error: the base $base has Python $basever, and $lock is for Python $pyver" >&2; exit 1; }
  hostver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ "$hostver" = "$pyver" ] || { echo "error: the wheelhouse of $lock needs Python $pyver here, and $python is Python $hostver: PYTHON=python$pyver bash docker/build_image.sh ..., or --from_index" >&2; exit 1; }
  stamp="docker/wheelhouse/.filled-from"
  wanted="$(sha256sum "$lock" | cut -c1-64) python$pyver"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then  # the wheelhouse is kept between builds of one lock
    rm -f docker/wheelhouse/*.whl "$stamp"
    echo "collecting wheels of $lock (Python $pyver) into docker/wheelhouse/ ..."
    # pip wheel: a package published only as source is built into a wheel here, so the image builds nothing.
    # torch alone comes from its own index (its +cpu build).
    extra=(); [ "$variant" = cpu ] && [ -n "$index" ] && extra=(--extra-index-url "$index")
    grep -E '^torch==' "$lock" > "docker/wheelhouse/torch.txt"
    grep -vE '^(torch==|#)' "$lock" > "docker/wheelhouse/others.txt"
    "$python" -m pip wheel --quiet --no-deps "${extra[@]}" -w docker/wheelhouse -r docker/wheelhouse/torch.txt
    "$python" -m pip wheel --quiet --no-deps -w docker/wheelhouse -r docker/wheelhouse/others.txt
    rm -f docker/wheelhouse/torch.txt docker/wheelhouse/others.txt
    echo "$wanted" > "$stamp"
  fi
fi

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
builder=(docker build)
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0  # no buildx: the classic builder
"${builder[@]}" -f docker/Dockerfile -t "$tag" "${network[@]}" \
  --build-arg "BASE_IMAGE=$base" --build-arg "VARIANT=$variant" \
  --label "org.timetrial.git_commit=$commit" .
echo "built $tag ($(docker image inspect --format '{{.Id}}' "$tag")); run: python submit.py --docker --docker_image $tag"
