#!/usr/bin/env bash
# Sets up .venv.
#   scripts/setup.sh            workstation/CI: PyTorch's CPU build first (so the project's torch range is
#                               already satisfied and pip pulls no CUDA packages), then the project with
#                               its [train,server,dev] extras.
#   scripts/setup.sh --device   what a device installs (`pip install -e .`): no torch, no onnx tooling;
#                               enough for `smearscope demo`, `run` and `analyze`.
#   --system (with either)      also the system packages the demo and tests use (Mosquitto, PostgreSQL,
#                               Chromium for the browser test) through apt-get, when run as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
mode=workstation
system=0
for arg in "$@"; do
  case "$arg" in
    --system) system=1 ;;
    --device) mode=device ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]; }

if ((system)); then
  missing=()
  have_mosquitto || missing+=(mosquitto mosquitto-clients)
  if [[ $mode == workstation ]]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  fi
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
      # The packages' own services are not needed: the demo and tests start private instances.
      (service mosquitto stop || true; service postgresql stop || true) >/dev/null 2>&1
    else
      echo "setup: missing system packages (${missing[*]}); install them, or what needs them is skipped" >&2
    fi
  fi
fi

device_stamp="$VENV/.smearscope-device"
workstation_stamp="$VENV/.smearscope-installed"
if [[ -f "$workstation_stamp" && "$workstation_stamp" -nt pyproject.toml ]]; then
  exit 0  # a workstation install holds the device install too
fi
if [[ $mode == device && -f "$device_stamp" && "$device_stamp" -nt pyproject.toml ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ $mode == device ]]; then
  "$VENV/bin/python" -m pip install -q -e .
  touch "$device_stamp"
else
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION}"
  "$VENV/bin/python" -m pip install -q -e ".[train,server,dev]"
  touch "$workstation_stamp" "$device_stamp"
fi
echo "setup: $mode environment ready in $VENV"
