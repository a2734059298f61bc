#!/usr/bin/env bash
# Install the OS (Debian) packages a make target needs, when missing: `os_packages.sh COMMAND=PACKAGE ...`
# checks each COMMAND (a program on PATH, or a path glob) and installs the PACKAGEs of those not found.
# CI runs as root; anyone else is told what to install.
set -euo pipefail

missing=()
for pair in "$@"; do
    probe=${pair%%=*}
    package=${pair#*=}
    if [[ $probe == /* ]]; then
        compgen -G "$probe" >/dev/null && continue
    else
        command -v "$probe" >/dev/null && continue
    fi
    missing+=($package)
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "This needs these OS packages: ${missing[*]} (sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
echo "Installing OS packages: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
