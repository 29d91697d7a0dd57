#!/usr/bin/env bash
# objmount's two entry points on a fresh Debian machine (root, or a user with sudo):
#   bash scripts/dev.sh demo   set everything up, start a local S3 server, load a sample
#                              dataset with objmount etl, mount it, train over it, clean up
#   bash scripts/dev.sh test   set everything up and run the whole test suite (what CI runs),
#                              its Docker tier included (a private dockerd it starts itself)
#   bash scripts/dev.sh setup  only install system packages and the Python environment,
#                              the Docker tier's included
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
VENV="${OBJMOUNT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# The Docker tier of the tests (tests/integration/docker_tier): Debian's engine, compose
# 1.29 and mmdebstrap for the local base image. The demo needs none of them.
DOCKER_TIER_PACKAGES=(docker.io docker-compose mmdebstrap)

system_packages() {
    local wanted=(fuse3 libfuse3-dev pkg-config gcc "$@")
    # Debian's python3 needs its venv and headers packages; a pyenv or distro-built one has them.
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || wanted+=(python3-venv)
    "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        || wanted+=(python3-dev)
    local missing=()
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing system packages: ${missing[*]}"
        $SUDO apt-get update -qq
        # Installing docker.io must not start the system's dockerd (a bridge, iptables
        # rules): the tests start a private one. policy-rc.d says no to every service start.
        local policy=/usr/sbin/policy-rc.d added_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
            $SUDO chmod +x "$policy"
            added_policy=1
        fi
        local status=0
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
            || status=$?
        if [ -n "$added_policy" ]; then $SUDO rm -f "$policy"; fi
        return "$status"
    fi
}

python_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -qq --upgrade pip
    fi
    # Reinstall only when the dependency list changed.
    local stamp="$VENV/.objmount-installed"
    local wanted
    wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        # torch: the demo and the training tests need it (pinned in pyproject.toml).
        # PYTHONWARNINGS: setuptools' "Editable installation" notice is not for users.
        PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/pip" install -qq -e ".[test,torch]"
        echo "$wanted" > "$stamp"
    fi
}

setup() {
    system_packages "$@"
    python_env
}

case "${1:-}" in
    setup) setup "${DOCKER_TIER_PACKAGES[@]}" ;;
    test)
        setup "${DOCKER_TIER_PACKAGES[@]}"
        "$VENV/bin/ruff" check .
        # Two workers (pytest-xdist): the suite mostly waits on deadlines, servers and
        # mounts; two on two cores took 961 s here, one process 1363 s. tests/workers.py
        # says how tests are shared. OBJMOUNT_TEST_WORKERS=0 runs it in one process.
        exec "$VENV/bin/pytest" -q -n "${OBJMOUNT_TEST_WORKERS:-2}" "${@:2}"
        ;;
    demo)
        setup
        exec "$VENV/bin/python" scripts/demo.py "${@:2}"
        ;;
    *)
        echo "usage: bash scripts/dev.sh setup|test|demo" >&2
        exit 2
        ;;
esac
