#!/usr/bin/env bash
# Create or reuse .venv in the repository root and install AugGen (editable) with what it
# needs. torch is pinned for this venv only (a CPU wheel on the build machines); a torch
# that is already installed is never replaced.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# One set-up at a time per checkout: commands started together (a test run beside a
# benchmark) would otherwise build into the same venv at once.
if command -v flock >/dev/null; then
  exec 9>"$root/.venv.lock"
  flock 9
fi
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[auggen] creating .venv" >&2
  "$py" -m venv .venv
fi
vpy=.venv/bin/python
stamp=.venv/.auggen-installed
# Rebuild when the build files or any compiled source changed (e.g. after a git pull), and
# reinstall when Python modules were added, moved or removed (the editable install maps a
# fixed list of modules).
want=$( (cat pyproject.toml CMakeLists.txt scripts/venv.sh
  find csrc kernels/cuda -type f | LC_ALL=C sort | xargs cat
  find auggen kernels -name '*.py' | LC_ALL=C sort) | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$vpy" -c "import auggen._C" 2>/dev/null; then
  exit 0
fi
pipq() { "$vpy" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$vpy" -c "import torch" 2>/dev/null; then
  echo "[auggen] installing torch==${AUGGEN_TORCH:-2.13.0}" >&2
  pipq "torch==${AUGGEN_TORCH:-2.13.0}"
fi
echo "[auggen] installing build tools and dependencies" >&2
pipq scikit-build-core pybind11 ninja
echo "[auggen] building and installing auggen (editable)" >&2
pipq --no-build-isolation -e ".[dev]"
"$vpy" -c "import auggen._C, torch; print('[auggen] ready: torch', torch.__version__)" >&2
echo "$want" > "$stamp"
