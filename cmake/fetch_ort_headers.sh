#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers (Debian trixie's libonnxruntime-dev) into a cache folder,
# without installing anything: apt-get download through a private source list, then dpkg-deb -x.
# Usage: fetch_ort_headers.sh CACHE_DIR
# On success prints the include directory (CACHE_DIR/.../usr/include/onnxruntime) on stdout.
set -euo pipefail

cache_dir=${1:?usage: fetch_ort_headers.sh CACHE_DIR}
include_dir="$cache_dir/root/usr/include/onnxruntime"
if [[ -f "$include_dir/onnxruntime_cxx_api.h" ]]; then
  echo "$include_dir"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch_ort_headers: $tool not found" >&2; exit 1; }
done

# The mirror is read from the machine's own apt configuration: the stanza whose suites include a
# plain "bookworm" (deb822 format), or the first plain "deb" line of sources.list.
uri=""
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  uri=$(awk '
    /^[[:space:]]*$/ { if (u != "" && plain) { print u; exit } u = ""; plain = 0; next }
    /^URIs:/ { u = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") plain = 1 }
    END { if (u != "" && plain) print u }
  ' /etc/apt/sources.list.d/debian.sources | head -n1)
fi
if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
  uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[[ -n "$uri" ]] || { echo "fetch_ort_headers: no Debian mirror found in the apt configuration" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$cache_dir"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] $uri trixie main" > "$work/trixie.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$work/trixie.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::archives=$work/archives"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
echo "fetch_ort_headers: downloading libonnxruntime-dev (trixie) from $uri" >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev >&2)
deb=$(ls "$work"/libonnxruntime-dev_*.deb | head -n1)
rm -rf "$cache_dir/root"
dpkg-deb -x "$deb" "$cache_dir/root"
cp "$deb" "$cache_dir/"
[[ -f "$include_dir/onnxruntime_cxx_api.h" ]] || { echo "fetch_ort_headers: headers missing in $deb" >&2; exit 1; }
echo "$include_dir"
