#!/bin/sh
# ci's TLS certificate and key: a self-signed pair made on first use under secrets/ENV/
# (never committed), then printed on each call. `phoenix.yaml` reads it through a secret
# `command`; a team would read its own from a secret store here instead, e.g.
#   aws ssm get-parameter --with-decryption --name /website/ci/tls_key --query Parameter.Value --output text
# Usage: sh tls-pair.sh ENV cert|key
set -eu
env="$1" part="$2"
dir="secrets/$env"
if [ ! -s "$dir/tls.crt" ] || [ ! -s "$dir/tls.key" ]; then
  mkdir -p "$dir"
  umask 077
  openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$env.website.test" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
fi
case "$part" in
  cert) cat "$dir/tls.crt" ;;
  key) cat "$dir/tls.key" ;;
  *) echo "usage: sh tls-pair.sh ENV cert|key" >&2; exit 2 ;;
esac
