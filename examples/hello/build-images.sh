#!/bin/sh
# Builds the demo images hello:v1, hello:v2 and hello:broken from this
# directory's static binary, with Docker's classic builder (no BuildKit, no
# registry). Safe to run again: images are rebuilt in place, layers cached.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# build TAG LDFLAGS
build() {
	dir="$tmp/$1"
	mkdir -p "$dir"
	(cd "$here" && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w $2" -o "$dir/hello" .)
	cp "$here/Dockerfile" "$dir/Dockerfile"
	DOCKER_BUILDKIT=0 docker build --quiet --tag "hello:$1" "$dir" >/dev/null
	echo "built hello:$1"
}

build v1 "-X main.version=v1"
build v2 "-X main.version=v2"
build broken "-X main.version=broken -X main.broken=true"
