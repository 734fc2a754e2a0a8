#!/usr/bin/env bash
# Installs the system packages lsio needs: liburing (headers + library, to build the io_uring
# binding), libblosc, libzstd and zlib (the Zarr fast path's batch decoder) and, with --bench (what `make test` uses), fio (the local benchmarks' yardstick)
# and nginx-light (the real HTTP server of the remote tests and benchmarks), and Azurite (the Azure
# Blob Storage emulator of the az:// tests; an npm package, installed with npm after apt).
# Uses apt-get when run as root on Debian/Ubuntu; otherwise prints the command to run.
set -euo pipefail
[ "$(uname -s)" = Linux ] || { echo "system-deps: not Linux, io_uring unavailable; lsio will use threads"; exit 0; }
need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
# blosc + zstd + zlib: the Zarr fast path's GIL-free batch decoder (lsio/_codec_build.py)
[ -f /usr/include/blosc.h ] || need+=(libblosc-dev)
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
# libcurl: the C HTTP transport (lsio/_curl_build.py); OpenSSL's flavour, as aiohttp's TLS
compgen -G "/usr/include/*/curl/curl.h" >/dev/null || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
[ -f /usr/include/openssl/hmac.h ] || need+=(libssl-dev)  # SigV4 signed in C
if [ "${1:-}" = "--bench" ]; then
  command -v fio >/dev/null || need+=(fio)
  command -v wrk >/dev/null || need+=(wrk)  # the C HTTP transport's yardstick
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
fi
if [ "${1:-}" = "--bench" ] && ! command -v azurite-blob >/dev/null; then
  command -v npm >/dev/null || need+=(npm)
  want_azurite=1
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "system-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "lsio needs system packages: ${need[*]}. Install them with:"
    echo "    sudo apt-get install -y ${need[*]}"
    exit 1
  fi
fi
if [ -n "${want_azurite:-}" ]; then
  # major version pinned: the tests use azurite-blob's v3 flags (npm >= 7 installs as root
  # without --unsafe-perm)
  if [ "$(id -u)" = 0 ] || [ -w "$(npm config get prefix)/lib" ]; then
    echo "system-deps: npm install -g azurite@3"
    npm install -g --no-fund --no-audit azurite@3 >/dev/null
  else
    echo "lsio's az:// tests need Azurite. Install it with:"
    echo "    sudo npm install -g azurite@3"
    exit 1
  fi
fi
