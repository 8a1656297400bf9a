#!/usr/bin/env bash
# mlipkit on an NVIDIA GPU, in one script: build against the machine's own CUDA torch, run the device tests
# (tests/test_device_kernels.py: CUDA ops = CPU kernels, gradcheck, every model on the GPU = on the CPU, CUDA
# artifacts = eager, C++ runtime = Python) and the GPU benchmark (tools/benchmark_gpu.py), and write what came
# out into one folder (seven files, as the device tool brings back at most eight): summary.md, build.log,
# tests.log, artifacts.log, benchmark.log, benchmark.json, benchmark.md.
#
#   bash tools/gpu_check.sh wheels          # on a machine with the package registry: the Python packages a bare
#                                           # GPU machine lacks (Python 3.12 wheels) into .whl/
#   bash tools/gpu_check.sh run OUT         # on the GPU machine (with .whl/ beside the sources): at most 9.5 minutes
#   bash tools/gpu_check.sh dry-run OUT     # on a machine without a GPU, in mlipkit's .venv: the same steps, the
#                                           # GPU tests on the CPU and a tiny benchmark (checks the script itself)
#
# Through the device tool: run `bash tools/gpu_check.sh wheels` here, then
#   run(command="bash tools/gpu_check.sh run $OUT", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
out=${2:-out/gpu_check}
# what a bare GPU machine lacks, or has in another version than mlipkit needs (its image has torch, numpy, scipy,
# matplotlib, pytest, pytest-xdist, pyyaml, tqdm, cmake and ninja); versions as in mlipkit's .venv, the build
# backend and pybind11 too, since pip checks a build's requirements even without build isolation
WHEELS=(e3nn==0.6.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 ase==3.29.0 vesin==0.6.2 scikit-build-core==1.1.2 pybind11==3.1.0)

# every step ends by the deadline (GPU_CHECK_SECONDS, default 560 s: the device tool's 600 s a command)
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-560}))

step() {  # step NAME LOG TIMEOUT_S COMMAND...: run, append to OUT/LOG.log, record the outcome and the time
  local name=$1 log=$2 limit=$3
  shift 3
  local start=$SECONDS
  ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
  if ((limit < 10)); then
    echo "| $name | not run: out of time | 0 s |" >>"$steps"
    echo "$name: not run (out of time)"
    return 1
  fi
  timeout "$limit" "$@" >>"$out/$log.log" 2>&1
  local status=$?
  local outcome="passed"
  [[ $status -eq 124 ]] && outcome="stopped after ${limit} s"
  [[ $status -ne 0 && $status -ne 124 ]] && outcome="failed (exit $status)"
  echo "| $name | $outcome | $((SECONDS - start)) s |" >>"$steps"
  echo "$name: $outcome in $((SECONDS - start)) s"
  return $status
}

case "$mode" in
  wheels)
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}" || exit 1
    du -sh .whl
    exit 0
    ;;
  run)
    python=python3
    export MLIPKIT_TEST_DEVICE=cuda
    benchmark=(--device cuda)
    ;;
  dry-run)
    python=.venv/bin/python
    export MLIPKIT_TEST_DEVICE=cpu
    benchmark=(--device cpu --calls 2)
    ;;
  *)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
steps=$(mktemp)
printf '| step | outcome | time |\n| --- | --- | --- |\n' >"$steps"
rm -f "$out"/*.log
export PYTHONUNBUFFERED=1

if [[ $mode == run ]]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash tools/gpu_check.sh wheels' where the registry is reachable and carry .whl" >&2
    exit 1
  fi
  step wheels build 60 "$python" -m pip install --no-index --no-deps --no-compile --target /tmp/mlipkit-site .whl/*.whl
  export PYTHONPATH=/tmp/mlipkit-site
  # the pybind11 runtime module needs Python's headers; without them the C++ runtime test is skipped (summary)
  bindings=ON
  "$python" -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" ||
    bindings=OFF
  export CMAKE_ARGS="-DMLIPKIT_PYTHON_BINDINGS=$bindings" TORCH_CUDA_ARCH_LIST=9.0
  export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
  step build build 300 "$python" -m pip install --no-build-isolation --no-deps -v . || {
    tail -40 "$out/build.log"
    exit 1
  }
fi

{
  echo "# mlipkit GPU check ($mode), $(date -u +%Y-%m-%d)"
  echo
  "$python" - <<'EOF'
import torch
import mlipkit
from mlipkit import ops
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (dry run)"
print(f"- GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); mlipkit {mlipkit.__version__}")
print(f"- device kernels in this build: {ops.has_kernels(torch.device('cuda'))}")
EOF
  [[ $mode == run ]] && echo "- nvcc: $(nvcc --version | tail -1); Python bindings of the C++ runtime: $bindings"
  echo
} >"$out/summary.md"

tests=(tests/test_device_kernels.py -q -rfEs -p no:cacheprovider -n 4)
step tests tests 150 "$python" -m pytest "${tests[@]}" -k "not artifact and not sm90"
step benchmark benchmark 180 "$python" tools/benchmark_gpu.py "${benchmark[@]}" --output "$out"
step artifacts artifacts 240 "$python" -m pytest "${tests[@]}" -k "artifact"

{
  cat "$steps"
  echo
  for log in tests artifacts; do
    echo "$log: $(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$out/$log.log" | tail -1)"
    grep -E "^(FAILED|ERROR|SKIPPED)" "$out/$log.log" | head -20
  done
  echo
  [[ -f $out/benchmark.md ]] && cat "$out/benchmark.md"
} >>"$out/summary.md"
cat "$out/summary.md"
