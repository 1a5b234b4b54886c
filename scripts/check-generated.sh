#!/usr/bin/env bash
# Fails when gen/ differs from what `buf generate` makes of proto/ (someone edited one without the other).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
buf generate --output "$scratch"
if ! diff -r "$scratch/gen" gen >/dev/null; then
  diff -r "$scratch/gen" gen || true
  echo "gen/ is stale: run npm run generate and commit the result" >&2
  exit 1
fi
echo "gen/ matches proto/"
