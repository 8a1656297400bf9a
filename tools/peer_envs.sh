#!/usr/bin/env bash
# Create the peers' environments for tools/benchmark_peers.py:
#   .peers/nequip  nequip 0.19.1 (e3nn 0.6, lightning, hydra)
#   .peers/mace    mace-torch 0.3.16 (e3nn 0.4.4, which mlipkit's e3nn 0.6 cannot share)
#   .peers/fairchem  fairchem-core 1.10.0 without its dependencies (the last release with
#                  GemNet-OC), pure-torch stand-ins for torch_scatter/torch_sparse from
#                  tools/fairchem_standins; for tools/fairchem_reference.py
# Both get torch==2.13.0 through a constraints file, so pip never resolves an
# unpinned torch. Safe to re-run: an environment whose peer imports is kept.
#   bash tools/peer_envs.sh [nequip] [mace] [fairchem]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
peers=("$@")
[ "${#peers[@]}" -gt 0 ] || peers=(nequip mace)
mkdir -p .peers
constraints=.peers/constraints.txt
echo "torch==2.13.0" > "$constraints"

for peer in "${peers[@]}"; do
  environment=".peers/$peer"
  case "$peer" in
    nequip) module=nequip ;;
    mace) module=mace ;;
    fairchem) module="fairchem, torch_scatter, torch_sparse" ;;
    *) echo "peer_envs: unknown peer '$peer' (nequip, mace or fairchem)" >&2; exit 2 ;;
  esac
  if [ -x "$environment/bin/python" ] && "$environment/bin/python" -c "import $module" 2>/dev/null; then
    echo "peer_envs: $environment is ready"
    continue
  fi
  echo "peer_envs: creating $environment"
  "$python" -m venv "$environment"
  pip=("$environment/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install -c "$constraints" "torch==2.13.0"
  case "$peer" in
    nequip)
      "${pip[@]}" install -c "$constraints" "nequip==0.19.1" ;;
    mace)
      # mace-torch's own requirements pull in optional heavy extras; install the
      # ones its model code imports, then the package without dependencies.
      "${pip[@]}" install -c "$constraints" "e3nn==0.4.4" opt_einsum opt-einsum-fx ase matscipy torch-ema \
        prettytable h5py torchmetrics python-hostlist configargparse GitPython pyyaml tqdm lmdb orjson pandas
      # the reduced coupling coefficients (use_reduced_cg) of the import fixtures come from cuequivariance
      "${pip[@]}" install -c "$constraints" "cuequivariance==0.13.0" "cuequivariance-torch==0.13.0" networkx scipy sympy
      "${pip[@]}" install --no-deps "mace-torch==0.3.16" ;;
    fairchem)
      # the GemNet-OC modules import these; torch_scatter/torch_sparse are compiled
      # packages, replaced by the stand-ins through a .pth file
      "${pip[@]}" install -c "$constraints" numpy scipy sympy ase pyyaml matplotlib torch-geometric
      "${pip[@]}" install --no-deps "fairchem-core==1.10.0"
      site=$("$environment/bin/python" -c "import site; print(site.getsitepackages()[0])")
      echo "$PWD/tools/fairchem_standins" > "$site/mlipkit_fairchem_standins.pth" ;;
  esac
  "$environment/bin/python" -c "import $module, torch; print('peer_envs: $peer', $module.__file__, 'torch', torch.__version__)"
done
