#!/usr/bin/env bash
# Adds pair_style mlip to a LAMMPS source tree, compiled into LAMMPS (for builds without the PLUGIN package,
# or static executables), for LAMMPS's CMake build:
#
#   bash lammps_plugin/install_into_lammps.sh /path/to/lammps
#   cmake -S /path/to/lammps/cmake -B build -DCMAKE_PREFIX_PATH="$(python -c 'import mlipkit.lammps as m; print(m.cmake_prefix_path())')" ...
#   cmake --build build
#
# It copies the pair style into src/ (LAMMPS compiles every src/*.cpp and registers the PairStyle of every
# src/*.h), writes src/mlipkit_lammps_version.h from src/version.h, and appends to cmake/CMakeLists.txt the
# lines that find the mlipkit runtime (find_package(mlipkit), no Python needed) and link it. The part that
# touches torch (pair_mlip_model.cpp) is compiled apart, with torch's flags, so the rest of LAMMPS keeps its own
# C++ string ABI. Running it again updates the files; the CMake lines are added once.
set -euo pipefail

if [ "$#" -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: bash lammps_plugin/install_into_lammps.sh /path/to/lammps-source-tree" >&2
  exit 2
fi
lammps="$(cd "$1" 2>/dev/null && pwd)" || { echo "install_into_lammps: no directory '$1'" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"
for needed in src/pair.h src/version.h cmake/CMakeLists.txt; do
  if [ ! -f "$lammps/$needed" ]; then
    echo "install_into_lammps: $lammps is not a LAMMPS source tree with a CMake build ($needed is missing)" >&2
    exit 1
  fi
done

# "29 Sep 2021" -> 20210929
date_line="$(grep -m1 'define LAMMPS_VERSION' "$lammps/src/version.h")"
read -r day month year < <(echo "$date_line" | sed -E 's/.*"([0-9]+) ([A-Za-z]+) ([0-9]+)".*/\1 \2 \3/')
months=(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)
month_number=0
for k in "${!months[@]}"; do [ "${months[$k]}" = "$month" ] && month_number=$((k + 1)); done
if [ "$month_number" -eq 0 ] || ! [[ "$day$year" =~ ^[0-9]+$ ]]; then
  echo "install_into_lammps: cannot read the version in $lammps/src/version.h: $date_line" >&2
  exit 1
fi
version=$(printf '%04d%02d%02d' "$year" "$month_number" "$day")

cp "$here/pair_mlip.h" "$here/pair_mlip.cpp" "$here/pair_mlip_model.h" "$here/lammps_compat.h" "$lammps/src/"
mkdir -p "$lammps/src/ML-MLIPKIT"
cp "$here/pair_mlip_model.cpp" "$here/pair_mlip_model.h" "$lammps/src/ML-MLIPKIT/"
cat > "$lammps/src/mlipkit_lammps_version.h" <<EOF
// Written by mlipkit's install_into_lammps.sh from version.h ($day $month $year).
#pragma once
#define MLIPKIT_LAMMPS_NUM_VERSION $version
EOF

marker="# mlipkit: pair_style mlip (lammps_plugin/install_into_lammps.sh)"
if ! grep -qF "$marker" "$lammps/cmake/CMakeLists.txt"; then
  cat >> "$lammps/cmake/CMakeLists.txt" <<'EOF'

# mlipkit: pair_style mlip (lammps_plugin/install_into_lammps.sh)
# The mlipkit runtime from -DCMAKE_PREFIX_PATH=<mlipkit prefix> (python -c 'import mlipkit.lammps as m;
# print(m.cmake_prefix_path())'). pair_mlip_model.cpp takes torch's compile flags; LAMMPS keeps its own.
find_package(mlipkit REQUIRED)
add_library(mlipkit_pair_mlip_model STATIC ${LAMMPS_SOURCE_DIR}/ML-MLIPKIT/pair_mlip_model.cpp)
set_target_properties(mlipkit_pair_mlip_model PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_link_libraries(mlipkit_pair_mlip_model PRIVATE mlipkit::runtime)
target_link_libraries(lammps PRIVATE mlipkit_pair_mlip_model)
target_compile_features(lammps PRIVATE cxx_std_17)  # pair_mlip.cpp (LAMMPS before 2023 defaults to C++11)
if(TARGET lmp)
  set_target_properties(lmp PROPERTIES INSTALL_RPATH "${mlipkit_LIBRARY_DIR};${mlipkit_TORCH_LIBRARY_DIR}")
endif()
EOF
fi

echo "pair_style mlip added to LAMMPS $version in $lammps. Build LAMMPS with CMake, for example:"
echo "  cmake -S $lammps/cmake -B build-lammps -DBUILD_MPI=on -DCMAKE_PREFIX_PATH=\"\$(python -c 'import mlipkit.lammps as m; print(m.cmake_prefix_path())')\""
echo "  cmake --build build-lammps -j"
