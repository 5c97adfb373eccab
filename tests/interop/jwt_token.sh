#!/usr/bin/env bash
# Mints an HS256 JWT with OpenSSL alone (README "JWT authentication"):
#   jwt_token.sh SECRET_FILE SUB SECONDS [EXTRA_JSON_MEMBERS]
# e.g. jwt_token.sh jwt.secret sensor-1 3600 '"publish":["sensors/%c/#"]'
set -euo pipefail
secret=$1 sub=$2 ttl=$3 extra=${4:-}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","exp":%d%s}' "$sub" $(( $(date +%s) + ttl )) "${extra:+,$extra}" | b64url)
key=$(od -An -v -tx1 "$secret" | tr -d ' \n')
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"
