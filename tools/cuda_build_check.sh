#!/usr/bin/env bash
# Compiles the CUDA sources (csrc/device/*.cu) with this machine's nvcc for sm_90 (H100/H200) against the torch
# headers of mlipkit's environment: no GPU and no CUDA torch needed, so the CUDA kernels keep compiling on the
# CPU machines. Checks that every kernel was built for both dtypes; nothing built here runs here.
#
#   bash tools/cuda_build_check.sh          # NVCC=..., PYTHON=... to choose others than nvcc and .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
nvcc=${NVCC:-nvcc}
torch_dir=$("$python" -c "import os, torch; print(os.path.dirname(torch.__file__))")
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# a CPU wheel ships c10/cuda's headers but not the one a CUDA build of torch generates
mkdir -p "$work/include/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/include/c10/cuda/impl/cuda_cmake_macros.h"
for source in csrc/device/*.cu; do
  object="$work/$(basename "$source").o"
  "$nvcc" -std=c++17 -arch=sm_90 -c "$source" -o "$object" -isystem "$work/include" -isystem "$torch_dir/include" \
    -isystem "$torch_dir/include/torch/csrc/api/include" -D_GLIBCXX_USE_CXX11_ABI="$abi" -diag-suppress=3306 \
    -Xcompiler -fPIC,-Wall,-Wextra
  nm "$object" >"$work/symbols"
  for kernel in ConvolutionForward ConvolutionInputGradient ConvolutionWeightGradient ConvolutionHarmonicsGradient \
    PolynomialEvaluate PolynomialCoefficientGradient SegmentOuterSum SegmentOuterBasisGradient \
    SegmentOuterFeaturesGradient; do
    for type in f d; do
      if ! grep -q "__device_stub__.*run_elements.*${#kernel}${kernel}I${type}E" "$work/symbols"; then
        echo "$source: no sm_90 kernel for $kernel<$type>" >&2
        exit 1
      fi
    done
  done
  echo "$source: compiled for sm_90 by nvcc $("$nvcc" --version | grep -o "release [0-9.]*" | cut -d" " -f2), 18 kernels"
done
