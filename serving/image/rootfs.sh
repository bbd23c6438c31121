#!/usr/bin/env bash
# Stage 1 of build.sh: write a tar of a minimal Debian root filesystem with a Python venv
# holding requirements.lock to stdout (for `docker import`). Wheels are downloaded once
# (hash-checked) into CACHE_DIR/wheels and installed offline inside the chroot.
# Usage: rootfs.sh CACHE_DIR SUITE MIRROR REQUIREMENTS_LOCK   (as root)
set -euo pipefail
CACHE_DIR="$1"; SUITE="$2"; MIRROR="$3"; LOCK="$4"
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$HERE/../../.venv/bin/python}"
log() { echo "[serving-image] $*" >&2; }
exec 3>&1 1>&2  # stdout carries only the tar; everything else goes to stderr

WHEELS="$CACHE_DIR/wheels"
mkdir -p "$WHEELS"
log "downloading wheels for python 3.11 into $WHEELS"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$WHEELS" -r "$LOCK" 2> >(grep -v "is ignored: it is neither" >&2)

ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
log "debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
  || { log "debootstrap failed; see $CACHE_DIR/debootstrap.log"; tail -5 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }

mkdir -p "$ROOTFS/tmp/wheels"
cp -l "$WHEELS"/*.whl "$ROOTFS/tmp/wheels/" 2>/dev/null || cp "$WHEELS"/*.whl "$ROOTFS/tmp/wheels/"
cp "$LOCK" "$ROOTFS/tmp/requirements.lock"
log "installing the wheels into /opt/venv inside the root filesystem"
# A clean environment: the host's PIP_*/PYTHON* settings must not leak into the image.
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TF_CPP_MIN_LOG_LEVEL=2 chroot "$ROOTFS" "$@"; }
in_root /usr/bin/python3 -m venv /opt/venv
in_root /opt/venv/bin/pip install --quiet --disable-pip-version-check --no-index \
  --no-deps --require-hashes --find-links /tmp/wheels -r /tmp/requirements.lock
in_root /opt/venv/bin/python -c "import tensorflow, tensorflow_serving.apis, grpc, prometheus_client"

rm -rf "$ROOTFS/tmp/wheels" "$ROOTFS/tmp/requirements.lock" "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
  "$ROOTFS"/root/.cache
log "packing the root filesystem"
tar --numeric-owner -C "$ROOTFS" -c . >&3
