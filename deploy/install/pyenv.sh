#!/usr/bin/env bash
# pyenv.sh REQUIREMENTS: make (once) a Python virtual environment with the
# pinned packages of REQUIREMENTS under
#   ${EMBEDFLEET_CACHE:-$HOME/.cache/embedfleet}/pyenv-<sha256 of the file, 12 hex>/
# and print its directory. The hash in the name means that changing a pin makes
# a new environment and leaves the old one alone; a complete environment has a
# .ok marker, so a second call returns at once.
set -euo pipefail
req=${1:?usage: pyenv.sh REQUIREMENTS}
[ -f "$req" ] || { echo "pyenv: no such requirements file: $req" >&2; exit 1; }
CACHE=${EMBEDFLEET_CACHE:-$HOME/.cache/embedfleet}
hash=$(sha256sum "$req" | cut -c1-12)
dir=$CACHE/pyenv-$hash
if [ -f "$dir/.ok" ]; then echo "$dir"; exit 0; fi
echo "pyenv: creating $dir from $req (first time only; torch with its CUDA libraries is several GB)" >&2
rm -rf "$dir"
mkdir -p "$CACHE"
python3 -m venv "$dir" >&2
if ! "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2; then
  echo "pyenv: pip could not install $req (see above); nothing was kept" >&2
  rm -rf "$dir"
  exit 1
fi
touch "$dir/.ok"
echo "$dir"
