#!/usr/bin/env bash
# Debian packages the real node and `make images` need: runc, containerd, docker.io (dockerd + the legacy
# builder), debootstrap (the local base image), containernetworking-plugins (bridge + host-local CNI) and gcc
# (the static pause binary). Installs only what is missing; silent and fast when all are there.
# Without root or apt-get it says so in one line and exits 0: the control plane then runs kwok nodes only.
set -euo pipefail

packages=(runc containerd docker.io debootstrap containernetworking-plugins gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not installing ${missing[*]} (needs root and apt-get): the test cluster will run kwok nodes only" >&2
  exit 0
fi
echo "installing ${missing[*]} (apt-get) for the real test node and the images" >&2
export DEBIAN_FRONTEND=noninteractive
# A stale package index gives 404s: refresh it once, then install. Services are not started (no systemd here;
# the control plane starts its own containerd, `make images` its own dockerd).
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
