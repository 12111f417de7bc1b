#!/usr/bin/env bash
# Installs FerretDB v1.24.2 (a MongoDB-wire-compatible server; its SQLite handler
# needs nothing else) into $(go env GOPATH)/bin, for the MongoDB store's tests.
# Does nothing when a working binary is already there.
#
# The documented way is `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`.
# It is tried first, but on its own it does not give a working binary here:
#  - go install reads the module's version list to check for deprecation, and a
#    Go proxy that serves only exact versions refuses that list (403);
#  - the module as published lacks build/version/version.txt, so a binary built
#    from it panics at start (FerretDB issue #2982).
# So, when needed, the same v1.24.2 module source is built with version.txt written.
set -euo pipefail

VERSION=v1.24.2
bin="$(go env GOPATH)/bin/ferretdb"

works() { "$bin" --version 2>/dev/null | grep -q "version: $VERSION"; }

if works; then
  echo "ferretdb $VERSION already at $bin"
  exit 0
fi
go install "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION" 2>/dev/null || true
if works; then
  echo "ferretdb $VERSION installed at $bin (go install)"
  exit 0
fi

dir=$(go mod download -json "github.com/FerretDB/FerretDB@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "could not download github.com/FerretDB/FerretDB@$VERSION from the Go module proxy" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$dir/." "$src"
chmod -R u+w "$src"
echo "$VERSION" > "$src/build/version/version.txt"
mkdir -p "$(dirname "$bin")"
(cd "$src" && go build -o "$bin" ./cmd/ferretdb)
works || { echo "the ferretdb built at $bin does not run" >&2; exit 1; }
echo "ferretdb $VERSION built from its module source at $bin"
