#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers from the official release archive of a pinned version into
# DEST/include, for builds where neither a system install nor Debian's package is at hand (macOS,
# Windows, other Linux distributions, cibuildwheel's before-all: pyproject.toml). The headers are
# the same in every platform's archive, so the Linux x64 one serves all. Needs curl and tar (both
# ship with macOS and Windows 10+; bash on Windows: Git for Windows). The download is not run in
# this project's CI; docs/building.md.
# Usage: fetch_ort_release_headers.sh DEST [VERSION]   (VERSION >= 1.21, default 1.21.0)
# ORT_RELEASE_BASE_URL overrides where the archives are taken from (a mirror, a file:// folder).
# On success prints DEST/include on stdout: pass it as ONNXRUNTIME_INCLUDE_DIR.
set -euo pipefail

dest=${1:?usage: fetch_ort_release_headers.sh DEST [VERSION]}
version=${2:-1.21.0}
base=${ORT_RELEASE_BASE_URL:-https://github.com/microsoft/onnxruntime/releases/download/v$version}
name="onnxruntime-linux-x64-$version"
if [[ -f "$dest/include/onnxruntime_cxx_api.h" ]]; then
  echo "$dest/include"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch_ort_release_headers: downloading $name.tgz from $base" >&2
curl -fsSL --retry 3 -o "$work/$name.tgz" "$base/$name.tgz"
tar -xzf "$work/$name.tgz" -C "$work" "$name/include"
mkdir -p "$dest"
rm -rf "$dest/include"
mv "$work/$name/include" "$dest/include"
[[ -f "$dest/include/onnxruntime_cxx_api.h" ]] || {
  echo "fetch_ort_release_headers: onnxruntime_cxx_api.h missing in $name.tgz" >&2
  exit 1
}
echo "$dest/include"
