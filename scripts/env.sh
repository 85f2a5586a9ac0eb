# Sourced by the scripts: paths into the virtual environment (no network use here).
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export BLOCKRES_PYTHON="$root/.venv/bin/python"
