#!/usr/bin/env bash
# Installs the system packages lsio needs: liburing (headers + library, to build the io_uring
# binding), libblosc and libzstd (the Zarr fast path's batch decoder) and, with --bench (what `make test` uses), fio (the local benchmarks' yardstick)
# and nginx-light (the real HTTP server of the remote tests and benchmarks).
# Uses apt-get when run as root on Debian/Ubuntu; otherwise prints the command to run.
set -euo pipefail
[ "$(uname -s)" = Linux ] || { echo "system-deps: not Linux, io_uring unavailable; lsio will use threads"; exit 0; }
need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
# blosc + zstd: the Zarr fast path's GIL-free batch decoder (lsio/_codec_build.py)
[ -f /usr/include/blosc.h ] || need+=(libblosc-dev)
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)
if [ "${1:-}" = "--bench" ]; then
  command -v fio >/dev/null || need+=(fio)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
fi
[ ${#need[@]} -eq 0 ] && exit 0
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
