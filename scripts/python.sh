#!/usr/bin/env bash
# Prints the path of a working Python X.Y interpreter (`scripts/python.sh 3.13`): `pythonX.Y`
# on PATH if it runs (a pyenv shim may exist but refuse), else pyenv's own copy of that version.
# Exits 1, naming the version, when there is none: `make test` fails loudly rather than skip.
set -euo pipefail
v="${1:?usage: scripts/python.sh X.Y}"
if command -v "python$v" >/dev/null 2>&1 && "python$v" -c pass >/dev/null 2>&1; then
  command -v "python$v"; exit 0
fi
root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
for p in "$root"/versions/"$v".*/bin/"python$v"; do
  if [ -x "$p" ] && "$p" -c pass >/dev/null 2>&1; then echo "$p"; exit 0; fi
done
echo "scripts/python.sh: no working Python $v (neither python$v on PATH nor pyenv's $v.*)" >&2
exit 1
