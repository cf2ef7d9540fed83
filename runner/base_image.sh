#!/usr/bin/env bash
# A local python base image from Debian packages, for machines that cannot pull the official one
# (no Docker Hub): `invoke build --base-image local` (or `invoke base-image`) runs this first and
# builds on its tag.
#
#   runner/base_image.sh [--tag TAG] [--mirror URL] [--ca-bundle FILE]
#
# debootstrap --variant=minbase bookworm with Debian's python3.11 and its venv module, then a venv
# /opt/python (pip, setuptools from Debian's bundled wheels) first on PATH, so `python` and
# `python -m pip` work as in the official image (runner/dockerfiles/install-lock.sh installs with
# that pip into the images' own /opt/venv). Imported as one layer, tagged TAG (default
# zoo/python-local:3.11-bookworm). Everything is fetched on the host by debootstrap: the mirror
# (default http://deb.debian.org/debian) must be reachable from here; --ca-bundle FILE is the CA
# bundle for an https mirror behind a TLS-re-signing network (wget's ca_certificate, for this run
# only: it is not put in the image; the image trusts Debian's ca-certificates). The image's apt
# sources are the mirror's bookworm main (the OpenMMLab images' apt-get uses them).
#
# Idempotent: nothing is done when TAG exists. Needs root (debootstrap, chroot), debootstrap
# (apt-get install debootstrap) and a reachable Docker daemon (the docker CLI); each missing one is
# a one-line error, exit 1, before anything is done. About 2 minutes; the image is about 150 MB.
set -euo pipefail

TAG=zoo/python-local:3.11-bookworm
MIRROR=http://deb.debian.org/debian
CA=""
SUITE=bookworm
PACKAGES=ca-certificates,python3.11,python3.11-venv

die() { echo "base_image: $*" >&2; exit 1; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --tag) TAG="${2:?}"; shift 2 ;;
        --mirror) MIRROR="${2:?}"; shift 2 ;;
        --ca-bundle) CA="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (usage: runner/base_image.sh [--tag TAG] [--mirror URL] [--ca-bundle FILE])" ;;
    esac
done

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon reachable (start dockerd, or set DOCKER_HOST)"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base_image: $TAG exists, nothing to do"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root to make $TAG (debootstrap and chroot need it)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
if [ -n "$CA" ]; then
    [ -f "$CA" ] || die "--ca-bundle $CA: no such file"
    grep -q -- "-----BEGIN CERTIFICATE-----" "$CA" || die "--ca-bundle $CA: no PEM certificate in it"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zoo-base.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOG="${TMPDIR:-/tmp}/zoo-base-image.log"
ROOTFS="$WORK/rootfs"
if [ -n "$CA" ]; then
    printf 'ca_certificate = %s\n' "$(readlink -f "$CA")" > "$WORK/wgetrc"
    export WGETRC="$WORK/wgetrc"
fi

# debootstrap's --include does not order the configuration of python3.11-venv after python3.11:
# minbase first, then apt-get in the new root (host DNS; the same mirror, CA bundle for https).
echo "base_image: debootstrap $SUITE minbase from $MIRROR, then apt-get install $PACKAGES (log: $LOG)"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" > "$LOG" 2>&1 \
    || die "debootstrap failed: $(grep -E '^(E|W):' "$LOG" | tail -n1 || true) (log: $LOG)"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
APT=(apt-get -o Acquire::Retries=3)
if [ -n "$CA" ]; then
    mkdir -p "$ROOTFS/run/zoo-ca" && cp "$CA" "$ROOTFS/run/zoo-ca/ca.pem"
    APT+=(-o Acquire::https::CaInfo=/run/zoo-ca/ca.pem)
fi
{ chroot "$ROOTFS" "${APT[@]}" update \
    && DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" "${APT[@]}" install -y --no-install-recommends \
        ${PACKAGES//,/ } \
    && chroot "$ROOTFS" /usr/bin/python3.11 -m venv /opt/python; } >> "$LOG" 2>&1 \
    || die "installing $PACKAGES in the new root failed: $(grep -E '^(E|W):' "$LOG" | tail -n1 || true) (log: $LOG)"
rm -rf "$ROOTFS/run/zoo-ca"
: > "$ROOTFS/etc/resolv.conf"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/*

echo "base_image: importing $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL io.zoo.base=\"debootstrap $SUITE minbase, $PACKAGES, $MIRROR\"" \
    --change 'CMD ["python3"]' \
    - "$TAG" > /dev/null || die "docker import of $TAG failed"
docker run --rm --network none "$TAG" python -c 'import ssl, venv, pip' \
    || die "$TAG: python, ssl or pip does not work in the new image"
echo "base_image: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
