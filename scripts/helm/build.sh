#!/usr/bin/env bash
# Builds meridian-helm, the stand-in for `helm template` (scripts/helm/render/main.go), with
# Debian's Go and Debian's Go libraries only (sprig, sigs.k8s.io/yaml, gojsonschema), offline,
# in GOPATH mode as Debian lays its Go packages out under /usr/share/gocode.
# Output: the binary's path on stdout, cached as
# $KUBE_WORK/helm/<hash of the Go source>/meridian-helm (default KUBE_WORK: ~/.cache/meridian-kube),
# rebuilt only when the source changes. Installs the Debian packages it needs when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KUBE_WORK=${KUBE_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-kube}
hash=$(cat "$here"/render/*.go "$here/build.sh" | sha256sum | cut -c1-16)
BIN=$KUBE_WORK/helm/$hash/meridian-helm
if [[ -x $BIN ]]; then echo "$BIN"; exit 0; fi

packages=(golang-1.19-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev golang-github-xeipuuv-gojsonschema-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$KUBE_WORK/helm/$hash" "$KUBE_WORK/gocache"
# GOPATH mode: no module downloads; imports resolve from /usr/share/gocode (sprig's
# `semver/v3` import resolves through Go's minimal module compatibility).
export PATH=/usr/lib/go-1.19/bin:$PATH GO111MODULE=off GOPATH=/usr/share/gocode \
  GOCACHE=$KUBE_WORK/gocache CGO_ENABLED=0 GOPROXY=off GOFLAGS=
(cd "$here/render" && go build -o "$BIN.tmp" .) >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
