#!/usr/bin/env bash
# Sets up a workstation/CI environment in .venv: PyTorch's CPU build first (so the project's
# torch range is already satisfied and pip pulls no CUDA packages), then the project with its
# [train,dev] extras. With --system it also installs the system packages the tests use
# (Mosquitto, PostgreSQL) through apt-get, when run as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [[ "${1:-}" == "--system" ]]; then
  missing=()
  command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto mosquitto-clients)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
      # The packages' own services are not needed: tests start private instances.
      (service mosquitto stop || true; service postgresql stop || true) >/dev/null 2>&1
    else
      echo "setup: missing system packages (${missing[*]}); install them, or the tests that need them are skipped" >&2
    fi
  fi
fi

stamp="$VENV/.smearscope-installed"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}"
"$VENV/bin/python" -m pip install -q -e ".[train,dev]"
touch "$stamp"
echo "setup: environment ready in $VENV"
