#!/usr/bin/env bash
# Make a test CA, the broker's certificate, the server's client certificate and one client
# certificate per device. The certificate's CN becomes the MQTT user name
# (use_identity_as_username), so a device's CN must be its device_id.
#
#   deploy/make-certs.sh OUT_DIR DEVICE_ID [DEVICE_ID ...]
#
# Writes OUT_DIR/ca.crt, broker.{crt,key}, smearscope-server.{crt,key}, <device>.{crt,key}.
# Test material only: keys are unencrypted and the CA key stays beside the certificates.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [DEVICE_ID ...]" >&2
  exit 2
fi
out="$1"; shift
days="${CERT_DAYS:-825}"
broker_host="${BROKER_HOST:-localhost}"
mkdir -p "$out"
cd "$out"

newkey() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; chmod 600 "$1"; }

if [ ! -f ca.key ]; then
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=smearscope test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
fi

sign() {  # sign NAME EXTENSIONS
  newkey "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
  printf '%b' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

sign broker "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:${broker_host},DNS:localhost,IP:127.0.0.1\n"
client_ext="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
sign smearscope-server "$client_ext"
for device in "$@"; do
  if ! [[ "$device" =~ ^[A-Za-z0-9_.-]{1,64}$ ]]; then
    echo "bad device id: $device (use A-Z a-z 0-9 _ . -)" >&2
    exit 2
  fi
  sign "$device" "$client_ext"
done
echo "certificates in $(pwd): ca.crt broker.crt smearscope-server.crt $*"
