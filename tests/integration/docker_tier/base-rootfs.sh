#!/usr/bin/env bash
# The Docker tier's stand-in for python:3.11-slim, made from Debian's own packages:
#   bash base-rootfs.sh OUT.tar.gz
# A root filesystem for `docker import`: Debian bookworm (minbase) with python3, its
# venv module and headers, and CA certificates; a venv at /opt/venv (the import puts
# it first on PATH, so `python` and `pip` are its, as in python:3.11-slim); pip told
# to trust the system CA bundle, and this machine's own CAs from
# /usr/local/share/ca-certificates (where a proxy intercepts HTTPS, they are its).
# The tests cache OUT keyed by a hash of this file and those CAs (images.py).
#
# mmdebstrap rather than debootstrap: half the CPU (108 s against 360 s at load 5
# here), a private mount namespace (nothing left mounted if it is interrupted), and
# no sync(1) at the end, which waits for every filesystem on the machine, a stuck
# FUSE mount included (seen here: over 9 minutes).
set -euo pipefail
out=$1
mirror=${OBJMOUNT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
trap 'rm -f "$out.partial"' EXIT
mmdebstrap --quiet --mode=unshare --variant=minbase \
    --include=python3-venv,python3-dev,ca-certificates \
    --customize-hook='for ca in /usr/local/share/ca-certificates/*.crt; do
        if [ -f "$ca" ]; then cp "$ca" "$1/usr/local/share/ca-certificates/"; fi; done' \
    --customize-hook='chroot "$1" update-ca-certificates > /dev/null 2>&1' \
    --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" \
        > "$1/etc/pip.conf"' \
    bookworm - "$mirror" | gzip -1 > "$out.partial"
mv "$out.partial" "$out"
