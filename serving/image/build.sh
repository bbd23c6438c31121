#!/usr/bin/env bash
# Build the stand-in for tensorflow/serving with no container registry anywhere:
#   1. base: a Debian root filesystem from debootstrap + a venv with requirements.lock
#      (wheels from PyPI, hash-checked), turned into an image with `docker import`;
#   2. final: a thin `docker build` FROM that local image adding the model server's code
#      and the official image's entrypoint.
# Each stage is tagged by a hash of its inputs and skipped when that tag exists, so a
# rebuild with no changes takes seconds and a code-only change re-runs stage 2 only.
#
# Usage: serving/image/build.sh [--name NAME] [--cache-dir DIR] [--mirror URL] [--suite S]
# Prints the final image reference (NAME:HASH, also tagged NAME:latest) on stdout.
# Exit codes: 0 built or already present; 1 a build step failed; 2 bad usage;
#             3 missing prerequisite (docker daemon, debootstrap, root).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
NAME="tfx-serving-toolkit/model-server"
CACHE_DIR="$ROOT/.cache/serving-image"
MIRROR=""  # default: the Debian mirror this machine's apt uses
SUITE="bookworm"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --cache-dir) CACHE_DIR="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "[serving-image] $*" >&2; }
host_mirror() {  # the first non-security archive in apt's sources (deb822 or one-line)
  { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -v -- '-security' | head -1 || true
}
need() {
  command -v "$1" >/dev/null 2>&1 || { log "error: $1 not found. Next step: $2"; exit 3; }
}
[ -n "$MIRROR" ] || MIRROR="$(host_mirror)"
[ -n "$MIRROR" ] || { log "error: no Debian mirror found in apt's sources. Next step: pass --mirror URL"; exit 2; }
need docker "install Docker Engine (Debian: apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || {
  log "error: the Docker daemon does not answer. Next step: start it (systemctl start docker, or: nohup dockerd >/var/log/dockerd.log 2>&1 &)"
  exit 3; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
hash_files() { (cd "$ROOT" && sha256sum "$@" | sha256sum | cut -c1-16); }

# ---- stage 1: base root filesystem (slow, rarely changes) ----
BASE_INPUTS=(serving/image/rootfs.sh serving/image/requirements.lock)
BASE_HASH="$(printf '%s %s %s\n' "$(hash_files "${BASE_INPUTS[@]}")" "$SUITE" "$MIRROR" | sha256sum | cut -c1-16)"
BASE_IMAGE="$NAME-base:$BASE_HASH"
if image_exists "$BASE_IMAGE"; then
  log "base $BASE_IMAGE present, skipping debootstrap"
else
  [ "$(id -u)" = 0 ] || { log "error: debootstrap needs root. Next step: run as root (sudo make serving-image)"; exit 3; }
  need debootstrap "apt-get install -y debootstrap"
  log "building base $BASE_IMAGE (debootstrap $SUITE + wheels; minutes)"
  mkdir -p "$CACHE_DIR"
  # Tag only after rootfs.sh succeeded: a truncated tar must never become the base.
  if ! BASE_ID="$("$HERE/rootfs.sh" "$CACHE_DIR" "$SUITE" "$MIRROR" "$HERE/requirements.lock" \
        | docker import --message "tfx-serving-toolkit base $BASE_HASH" -)"; then
    [ -n "${BASE_ID:-}" ] && docker rmi "$BASE_ID" >/dev/null 2>&1 || true
    log "error: building the base root filesystem failed (see above)"; exit 1
  fi
  docker tag "$BASE_ID" "$BASE_IMAGE"
  log "imported $BASE_IMAGE"
fi

# ---- stage 2: model server code + entrypoint (fast) ----
CODE_INPUTS=(serving/__init__.py serving/image/Dockerfile
             serving/image/tf_serving_entrypoint.sh serving/image/tensorflow_model_server)
while IFS= read -r f; do CODE_INPUTS+=("$f"); done \
  < <(cd "$ROOT" && find serving/model_server -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort)
FINAL_HASH="$(printf '%s %s\n' "$BASE_HASH" "$(hash_files "${CODE_INPUTS[@]}")" | sha256sum | cut -c1-16)"
FINAL_IMAGE="$NAME:$FINAL_HASH"
if image_exists "$FINAL_IMAGE"; then
  log "$FINAL_IMAGE present, nothing to build"
else
  CONTEXT="$(mktemp -d)"
  trap 'rm -rf "$CONTEXT"' EXIT
  mkdir -p "$CONTEXT/serving/model_server"
  cp "$ROOT/serving/__init__.py" "$CONTEXT/serving/"  # the model server needs nothing else
  (cd "$ROOT" && find serving/model_server -name '*.py' -not -path '*/__pycache__/*' \
     -exec cp --parents {} "$CONTEXT/" \;)
  cp "$HERE/Dockerfile" "$HERE/tf_serving_entrypoint.sh" "$HERE/tensorflow_model_server" "$CONTEXT/"
  log "building $FINAL_IMAGE FROM $BASE_IMAGE"
  docker build --quiet --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.tfx-serving-toolkit.inputs=$FINAL_HASH" -t "$FINAL_IMAGE" "$CONTEXT" >/dev/null
fi
docker tag "$FINAL_IMAGE" "$NAME:latest"
# Older code-stage tags only cost disk: keep the current one (and :latest).
docker images "$NAME" --format '{{.Tag}}' | grep -vx -e "$FINAL_HASH" -e latest \
  | sed "s|^|$NAME:|" | xargs -r docker rmi >/dev/null 2>&1 || true
log "ready: $FINAL_IMAGE (also $NAME:latest)"
echo "$FINAL_IMAGE"
