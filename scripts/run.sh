#!/usr/bin/env bash
# Usage: scripts/run.sh <command...>  — run a command inside the project's .venv,
# creating/updating the venv first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/venv.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
exec "$@"
