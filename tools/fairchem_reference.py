"""fairchem-core 1.10.0's GemNetOC beside mlipkit's, in the reference environment (.peers/fairchem).

    bash tools/peer_envs.sh fairchem
    .peers/fairchem/bin/python tools/fairchem_reference.py --counts --evaluate
    .peers/fairchem/bin/python tools/fairchem_reference.py --fixture tests/data/fairchem_gemnet_oc_counts.json
    .peers/fairchem/bin/python tools/fairchem_reference.py --bases-fixture tests/data/fairchem_gemnet_oc_bases.json
    .peers/fairchem/bin/python tools/fairchem_reference.py --indices
    .peers/fairchem/bin/python tools/fairchem_reference.py --parity-fixture tests/data/fairchem_gemnet_oc_parity.pt
    .peers/fairchem/bin/python tools/fairchem_reference.py --caps-fixture tests/data/fairchem_gemnet_oc_caps.pt
    .peers/fairchem/bin/python tools/fairchem_reference.py --import-fixtures tests/data/fairchem_import

fairchem-core is installed without its dependencies; its GemNet-OC imports
torch_scatter and torch_sparse, for which tools/fairchem_standins provides
pure-torch stand-ins. fairchem.core's own __init__ pulls in its whole training
stack, so the packages on the way to the model are registered here as plain
namespaces and only the modules the model needs are imported.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import types
from pathlib import Path

#: OC20's gemnet-oc configuration (fairchem configs/s2ef/all/gemnet/gemnet-oc.yml, model section)
OC20_GEMNET_OC = dict(
    num_spherical=7, num_radial=128, num_blocks=4, emb_size_atom=256, emb_size_edge=512, emb_size_trip_in=64,
    emb_size_trip_out=64, emb_size_quad_in=32, emb_size_quad_out=32, emb_size_aint_in=64, emb_size_aint_out=64,
    emb_size_rbf=16, emb_size_cbf=16, emb_size_sbf=32, num_before_skip=2, num_after_skip=2, num_concat=1, num_atom=3,
    num_output_afteratom=3, cutoff=12.0, cutoff_qint=12.0, cutoff_aeaint=12.0, cutoff_aint=12.0, max_neighbors=30,
    max_neighbors_qint=8, max_neighbors_aeaint=20, max_neighbors_aint=1000, rbf={"name": "gaussian"},
    envelope={"name": "polynomial", "exponent": 5}, cbf={"name": "spherical_harmonics"}, sbf={"name": "legendre_outer"},
    extensive=True, output_init="HeOrthogonal", activation="silu", regress_forces=True, direct_forces=True,
    forces_coupled=False, quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True,
    atom_interaction=True, num_atom_emb_layers=2, num_global_out_layers=2, qint_tags=[1, 2],
)


@functools.cache
def import_gemnet_oc():
    """fairchem's GemNetOC class, without running fairchem.core's package initialisers (once: the stand-in
    packages it registers hide fairchem from a second look-up)."""
    spec = importlib.util.find_spec("fairchem")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fairchem is not installed here: run bash tools/peer_envs.sh fairchem and use .peers/fairchem/bin/python")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("fairchem", "fairchem.core", "fairchem.core.models", "fairchem.core.common"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules[name] = package
    from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC

    return GemNetOC


#: A small configuration with every interaction on, for evaluations on this machine
SMALL_GEMNET_OC = dict(
    num_spherical=3, num_radial=8, num_blocks=2, emb_size_atom=8, emb_size_edge=8, emb_size_trip_in=4,
    emb_size_trip_out=4, emb_size_quad_in=4, emb_size_quad_out=4, emb_size_aint_in=4, emb_size_aint_out=4,
    emb_size_rbf=4, emb_size_cbf=4, emb_size_sbf=4, num_before_skip=1, num_after_skip=1, num_concat=1, num_atom=1,
    num_output_afteratom=1, cutoff=5.0, cutoff_qint=4.0, cutoff_aeaint=4.5, cutoff_aint=5.0, max_neighbors=50,
    max_neighbors_qint=50, max_neighbors_aeaint=50, max_neighbors_aint=50, regress_forces=True, direct_forces=False,
    quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True, atom_interaction=True,
    otf_graph=True, use_pbc=True, num_atom_emb_layers=1, num_global_out_layers=1,
)


def fairchem_batch(atoms):
    """A one-structure torch_geometric batch as fairchem's models read it (float32: its graph code is float32)."""
    import torch
    from torch_geometric.data import Batch, Data

    data = Data(
        pos=torch.tensor(atoms.positions, dtype=torch.float32),
        cell=torch.tensor(atoms.cell.array, dtype=torch.float32).unsqueeze(0),
        atomic_numbers=torch.tensor(atoms.numbers),
        natoms=torch.tensor([len(atoms)]),
        tags=torch.ones(len(atoms), dtype=torch.long),
        fixed=torch.zeros(len(atoms)),
    )
    return Batch.from_data_list([data])


def evaluate_small() -> None:
    """fairchem's GemNetOC, every interaction on, on a rattled 32-atom Cu cell: energy, forces, and one force
    component against a central finite difference (the stand-ins give a consistent, differentiable model)."""
    import torch
    from ase.build import bulk

    GemNetOC = import_gemnet_oc()
    torch.manual_seed(0)
    model = GemNetOC(**SMALL_GEMNET_OC)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    out = model(fairchem_batch(atoms))
    energy, forces = float(out["energy"].detach()[0]), out["forces"].detach()
    step = 1e-3
    shifted = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[0, 1] += sign * step
        shifted.append(float(model(fairchem_batch(moved))["energy"].detach()[0]))
    numerical = -(shifted[0] - shifted[1]) / (2 * step)
    print(f"small GemNetOC ({sum(p.numel() for p in model.parameters()):,} parameters), 32 Cu atoms: energy {energy:.6f}, "
          f"|forces| {float(forces.norm()):.6f}, finite forces {bool(torch.isfinite(forces).all())}; "
          f"F[0, y] {float(forces[0, 1]):.5f} vs finite difference {numerical:.5f}")


#: Configurations whose parameter counts become the test fixture: OC20's, and the small one with each
#: interaction, basis and head option varied (one change each)
COUNT_CONFIGURATIONS = {
    "oc20_direct_forces": OC20_GEMNET_OC,
    "oc20_conservative": dict(OC20_GEMNET_OC, direct_forces=False),
    "small": SMALL_GEMNET_OC,
    "small_direct_forces": dict(SMALL_GEMNET_OC, direct_forces=True),
    "small_no_quadruplets": dict(SMALL_GEMNET_OC, quad_interaction=False),
    "small_no_atom_edge": dict(SMALL_GEMNET_OC, atom_edge_interaction=False),
    "small_no_edge_atom": dict(SMALL_GEMNET_OC, edge_atom_interaction=False),
    "small_no_atom_atom": dict(SMALL_GEMNET_OC, atom_interaction=False),
    "small_triplets_only": dict(
        SMALL_GEMNET_OC, quad_interaction=False, atom_edge_interaction=False, edge_atom_interaction=False, atom_interaction=False
    ),
    "small_concat_2": dict(SMALL_GEMNET_OC, num_concat=2),
    "small_three_blocks": dict(SMALL_GEMNET_OC, num_blocks=3, num_before_skip=2, num_after_skip=2, num_atom=2),
    "small_no_atom_emb_layers": dict(SMALL_GEMNET_OC, num_atom_emb_layers=0, num_global_out_layers=2),
    # fairchem 1.10's circular (triplet) basis is gaussian or spherical_harmonics; legendre_outer and
    # gaussian_outer exist only for the spherical (quadruplet) basis
    "small_spherical_bessel_gaussian_legendre": dict(
        SMALL_GEMNET_OC, rbf={"name": "spherical_bessel"}, cbf={"name": "gaussian"}, sbf={"name": "legendre_outer"}
    ),
    "small_bernstein_gaussian_outer": dict(
        SMALL_GEMNET_OC, rbf={"name": "bernstein"}, sbf={"name": "gaussian_outer"}, envelope={"name": "exponential"}
    ),
    "small_scale_basis": dict(SMALL_GEMNET_OC, scale_basis=True),
    "small_10_elements": dict(SMALL_GEMNET_OC, num_elements=10),
}


def count(model) -> dict:
    """Parameters in all and per top-level module, and the number of scale factors (fairchem counts them as parameters)."""
    per_module: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        top = name.split(".")[0]
        per_module[top] = per_module.get(top, 0) + parameter.numel()
    return {
        "parameters": sum(per_module.values()),
        "scale_factors": sum(1 for module in model.modules() if type(module).__name__ == "ScaleFactor"),
        "per_module": per_module,
    }


def write_fixture(path: Path) -> None:
    import json

    import torch

    GemNetOC = import_gemnet_oc()
    fixture = {"fairchem_core": "1.10.0", "configurations": {}}
    for name, options in COUNT_CONFIGURATIONS.items():
        torch.manual_seed(0)
        fixture["configurations"][name] = {"options": options, **count(GemNetOC(**options))}
        print(f"{name}: {fixture['configurations'][name]['parameters']:,} parameters")
    path.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


def compare_indices() -> None:
    """Numbers of triplets and quadruplets from fairchem's index code and from mlipkit's
    (models/gemnet_oc/indices.py, loaded by path: it needs only torch) on the same Cu cells."""
    import torch
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    GemNetOC = import_gemnet_oc()
    path = Path(__file__).resolve().parent.parent / "python" / "mlipkit" / "models" / "gemnet_oc" / "indices.py"
    spec = importlib.util.spec_from_file_location("mlipkit_gemnet_oc_indices", path)
    indices = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(indices)
    model = GemNetOC(**SMALL_GEMNET_OC)
    for repeats in (1, 2):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeats)
        atoms.rattle(0.05, seed=1)
        graphs = model.get_graphs_and_indices(fairchem_batch(atoms))
        main_graph, quad_idx, trip_idx_e2e = graphs[0], graphs[8], graphs[5]
        # mlipkit: one list at the largest cutoff, sorted by receiver; the graphs are distance masks of it
        senders, receivers, vectors = neighbor_list("ijD", atoms, SMALL_GEMNET_OC["cutoff_aint"])
        vectors = -vectors  # ase's D is x_j - x_i: from receiver i to sender j; mlipkit's is receiver - sender
        order = torch.from_numpy(receivers).argsort(stable=True)
        edge_index = torch.stack([torch.from_numpy(senders)[order], torch.from_numpy(receivers)[order]])
        edge_vectors = torch.from_numpy(vectors)[order]
        lengths = edge_vectors.norm(dim=1)
        main_edges = torch.nonzero(lengths <= SMALL_GEMNET_OC["cutoff"]).squeeze(1)
        qint_edges = torch.nonzero(lengths <= SMALL_GEMNET_OC["cutoff_qint"]).squeeze(1)
        num_nodes = len(atoms)
        reverse = indices.reverse_edges(edge_index, edge_vectors, num_nodes)
        ours_triplets = indices.triplets(edge_index.index_select(1, main_edges), num_nodes)[0].numel()
        quads = indices.quadruplets(edge_index, edge_vectors, reverse, main_edges, qint_edges, num_nodes)
        print(
            f"{len(atoms)} Cu atoms: main edges fairchem {main_graph['edge_index'].shape[1]} / mlipkit {main_edges.numel()}; "
            f"triplets {trip_idx_e2e['in'].numel()} / {ours_triplets}; "
            f"quadruplets {quad_idx['out'].numel()} / {quads['out'].numel()}"
        )


def write_bases_fixture(path: Path) -> None:
    """fairchem's radial bases (every rbf x envelope), circular (Gaussian, m = 0 spherical harmonics) and
    spherical-harmonics bases at fixed points, float64."""
    import json

    import torch

    import_gemnet_oc()
    from fairchem.core.models.gemnet_oc.layers.radial_basis import GaussianBasis, RadialBasis

    distances = torch.linspace(0.3, 5.2, 12, dtype=torch.float64)
    fixture = {"fairchem_core": "1.10.0", "num_radial": 6, "cutoff": 5.0, "distances": distances.tolist(), "radial": {}}
    for rbf in ("gaussian", "spherical_bessel", "bernstein"):
        for envelope in ({"name": "polynomial", "exponent": 5}, {"name": "exponential"}):
            basis = RadialBasis(num_radial=6, cutoff=5.0, rbf={"name": rbf}, envelope=envelope).double()
            fixture["radial"][f"{rbf}/{envelope['name']}"] = basis(distances).tolist()
    cosines = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)
    fixture["cosines"] = cosines.tolist()
    fixture["circular_gaussian"] = GaussianBasis(start=-1, stop=1, num_gaussians=5).double()(cosines).tolist()
    from fairchem.core.models.gemnet_oc.layers.basis_utils import get_sph_harm_basis

    fixture["circular_spherical_harmonics"] = get_sph_harm_basis(5, zero_m_only=True)(cosines).tolist()
    angles = torch.linspace(0.1, 3.0, 9, dtype=torch.float64)
    fixture["angles"] = angles.tolist()
    fixture["spherical_harmonics"] = get_sph_harm_basis(3, zero_m_only=False)(cosines, angles).tolist()
    from fairchem.core.models.gemnet_oc.layers.spherical_basis import SphericalBasisLayer

    radial = RadialBasis(num_radial=6, cutoff=5.0).double()
    for name in ("legendre_outer", "gaussian_outer"):
        layer = SphericalBasisLayer(3, radial, {"name": name}).double()
        fixture[name] = layer.spherical_basis(cosines, angles).tolist()
    path.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {path}")


#: Configurations compared with identical weights: every interaction on, each basis and head variant once
PARITY_CONFIGURATIONS = {
    "spherical_harmonics": SMALL_GEMNET_OC,
    "direct_forces_legendre_outer": dict(
        SMALL_GEMNET_OC, direct_forces=True, rbf={"name": "spherical_bessel"}, cbf={"name": "gaussian"},
        sbf={"name": "legendre_outer"}, num_concat=2,
    ),
    "bernstein_gaussian_outer": dict(
        SMALL_GEMNET_OC, rbf={"name": "bernstein"}, sbf={"name": "gaussian_outer"}, envelope={"name": "exponential"},
        scale_basis=True, num_output_afteratom=0,
    ),
}


def random_gemnet_oc(options: dict):
    """fairchem's GemNetOC with torch's seed-0 weights and scale factors drawn from [0.5, 1.5), and the generator
    that drew them (the import fixtures draw EMA weights from it next)."""
    import torch

    GemNetOC = import_gemnet_oc()
    torch.manual_seed(0)
    model = GemNetOC(**options)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "ScaleFactor":
                module.scale_factor.fill_(float(torch.rand((), generator=generator)) + 0.5)
    return model, generator


def parity_structures():
    """Two rattled 32-atom CuO cells of one composition (mlipkit subtracts each type's isolated-atom energy,
    fairchem does not, so energy differences are compared). The cells are wider than the cutoff: in smaller
    ones an atom and two of its own images form collinear triplets, where fairchem's spherical-harmonics
    forces are NaN."""
    from ase.build import bulk

    structures = []
    for seed in (1, 2):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.symbols[[1, 6, 11, 20, 29]] = "O"
        atoms.rattle(0.1, seed=seed)
        structures.append(atoms)
    return structures


def write_parity_fixture(path: Path) -> None:
    """fairchem's GemNetOC with random weights and random scale factors on two structures: its state dict,
    energies and forces (float32, as fairchem's graph code runs), for tests/test_gemnet_oc.py."""
    import torch

    structures = parity_structures()
    fixture = {"fairchem_core": "1.10.0", "structures": [], "configurations": {}}
    for atoms in structures:
        fixture["structures"].append(
            {"numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions), "cell": torch.tensor(atoms.cell.array)}
        )
    for name, options in PARITY_CONFIGURATIONS.items():
        model, _ = random_gemnet_oc(options)
        energies, forces = [], []
        for atoms in structures:
            out = model(fairchem_batch(atoms))
            energies.append(float(out["energy"].detach()[0]))
            forces.append(out["forces"].detach().clone())
        fixture["configurations"][name] = {
            "options": options,
            "state_dict": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "energies": energies,
            "forces": forces,
        }
        print(f"{name}: energies {energies}, |F| max {max(float(f.abs().max()) for f in forces):.4f}")
    torch.save(fixture, path)
    print(f"wrote {path}")


#: SMALL_GEMNET_OC with caps that bind unevenly on a slab with CO (surface, bulk-like and adsorbate atoms)
CAPPED_GEMNET_OC = dict(SMALL_GEMNET_OC, max_neighbors=12, max_neighbors_qint=6, max_neighbors_aeaint=8, max_neighbors_aint=20)


def capped_structures():
    """A Cu(111) slab (2 x 2 x 3) with CO on top, rattled twice: one composition, for energy differences. Rattled,
    since the perfect slab has ties at the caps (which neighbour a cap keeps among equals is each package's own)
    and collinear triplets (where fairchem's forces are NaN)."""
    from ase.build import add_adsorbate, fcc111, molecule

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, molecule("CO"), 1.9, "ontop")
    slab.pbc = True
    structures = []
    for seed in (3, 4):
        rattled = slab.copy()
        rattled.rattle(0.05, seed=seed)
        structures.append(rattled)
    return structures


def write_caps_fixture(path: Path) -> None:
    """fairchem's CAPPED_GEMNET_OC (random weights and scale factors) on capped_structures(): its state dict,
    energies, forces and the size of its capped embedding graph, for tests/test_gemnet_oc.py."""
    import torch

    model, _ = random_gemnet_oc(CAPPED_GEMNET_OC)
    structures = []
    for atoms in capped_structures():
        batch = fairchem_batch(atoms)
        out = model(batch)
        structures.append({"numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions),
                           "cell": torch.tensor(atoms.cell.array), "energy": float(out["energy"].detach()[0]),
                           "forces": out["forces"].detach().clone(),
                           "embedding_edges": int(model.get_graphs_and_indices(batch)[0]["edge_index"].shape[1])})
    torch.save({"fairchem_core": "1.10.0", "options": CAPPED_GEMNET_OC, "structures": structures,
                "state_dict": {key: value.detach().clone() for key, value in model.state_dict().items()}}, path)
    print(f"wrote {path}: embedding edges {[s['embedding_edges'] for s in structures]}")


#: checkpoints as fairchem-core's trainer saves them, for tests/test_import.py: a direct-forces model with EMA
#: weights, normalizers and element references (fairchem 1.x layout), and a conservative one in the older
#: layout (config "model" a name beside "model_attributes"; normalizers "target"/"grad_target" with "std")
IMPORT_CHECKPOINTS = {
    "gemnet_oc_direct_ema": dict(options=dict(SMALL_GEMNET_OC, direct_forces=True), ema=True, layout="1.x",
                                 energy=(0.0, 1.7), forces=(0.0, 1.7), references={8: -4.9, 29: -3.6}),
    "gemnet_oc_conservative": dict(options=SMALL_GEMNET_OC, ema=False, layout="ocp", energy=(0.0, 2.3), forces=(0.0, 2.3),
                                   references=None),
}


def write_import_fixtures(directory: Path) -> None:
    """Each IMPORT_CHECKPOINTS checkpoint (random weights and scale factors; EMA weights moved off the
    weights) beside the energies and forces fairchem's trainer predicts with it (denormalised, element
    references added, EMA weights in place) on parity_structures()."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    structures = parity_structures()
    for name, recipe in IMPORT_CHECKPOINTS.items():
        model, generator = random_gemnet_oc(recipe["options"])
        # as torch.save keeps them: one copy of a tensor registered under two names
        copies = {}
        state_dict = {f"module.{key}": copies.setdefault(id(value), value.detach().clone()) for key, value in model.state_dict().items()}
        ema = None
        if recipe["ema"]:
            trainable = [p for p in model.parameters() if p.requires_grad]
            shadow = [p.detach() + 0.01 * torch.randn(p.shape, generator=generator) for p in trainable]
            ema = {"decay": 0.999, "num_updates": 100, "shadow_params": shadow, "collected_params": []}
            with torch.no_grad():
                for parameter, value in zip(trainable, shadow):
                    parameter.copy_(value)
        (energy_mean, energy_rmsd), (forces_mean, forces_rmsd) = recipe["energy"], recipe["forces"]
        references = torch.zeros(119)
        for z, value in (recipe["references"] or {}).items():
            references[z] = value
        results = []
        for atoms in structures:
            out = model(fairchem_batch(atoms))
            energy = float(out["energy"].detach()[0]) * energy_rmsd + energy_mean + float(references[atoms.numbers].sum())
            results.append({"numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions),
                            "cell": torch.tensor(atoms.cell.array), "energy": energy,
                            "forces": out["forces"].detach() * forces_rmsd + forces_mean})
        model_config = {"name": "gemnet_oc", **recipe["options"], "scale_file": "configs/s2ef/all/gemnet/scaling_factors/gemnet-oc.pt"}
        if recipe["layout"] == "1.x":
            checkpoint = {
                "state_dict": state_dict, "config": {"model": model_config, "trainer": "ocp", "optim": {"batch_size": 8}},
                "normalizers": {"energy": {"mean": torch.tensor(energy_mean), "rmsd": torch.tensor(energy_rmsd)},
                                "forces": {"mean": torch.tensor(forces_mean), "rmsd": torch.tensor(forces_rmsd)}},
                "elementrefs": {"energy": {"element_references": references}},
                "epoch": 3, "step": 1200, "ema": ema, "amp": None, "val_metrics": None,
            }
        else:
            attributes = {key: value for key, value in model_config.items() if key != "name"}
            checkpoint = {
                "state_dict": state_dict, "config": {"model": "gemnet_oc", "model_attributes": attributes, "trainer": "forces"},
                "normalizers": {"target": {"mean": torch.tensor(energy_mean), "std": torch.tensor(energy_rmsd)},
                                "grad_target": {"mean": torch.tensor(forces_mean), "std": torch.tensor(forces_rmsd)}},
                "epoch": 3, "step": 1200, "ema": ema, "amp": None,
            }
        torch.save(checkpoint, directory / f"{name}.pt")
        torch.save({"structures": results, "dtype": "float32", "fairchem_core": "1.10.0",
                    "parameters": sum(p.numel() for p in model.parameters())}, directory / f"{name}.reference.pt")
        print(f"wrote {directory / name}.pt ({(directory / f'{name}.pt').stat().st_size // 1024} KB): energies "
              f"{[round(r['energy'], 5) for r in results]}")


def parameter_counts() -> None:
    GemNetOC = import_gemnet_oc()
    for direct_forces in (True, False):
        model = GemNetOC(**dict(OC20_GEMNET_OC, direct_forces=direct_forces))
        parameters = sum(p.numel() for p in model.parameters())
        # fairchem's ScaleFactor modules hold their factor as a (frozen) parameter, counted above
        scale_factors = sum(1 for module in model.modules() if type(module).__name__ == "ScaleFactor")
        print(f"OC20 gemnet-oc, direct_forces={direct_forces}: {parameters:,} parameters, {scale_factors} scale factors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", action="store_true", help="parameter counts of fairchem's GemNetOC (OC20 configuration)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate a small GemNetOC (every interaction on) on a Cu cell")
    parser.add_argument("--fixture", type=Path, help="write parameter counts of several configurations to this JSON file")
    parser.add_argument("--indices", action="store_true", help="triplet and quadruplet counts, fairchem's and mlipkit's")
    parser.add_argument("--bases-fixture", type=Path, help="write fairchem's radial, circular and spherical basis values to this JSON file")
    parser.add_argument("--parity-fixture", type=Path, help="write fairchem's weights, energies and forces (several configurations) to this .pt file")
    parser.add_argument("--caps-fixture", type=Path, help="write fairchem's predictions where neighbour caps bind unevenly (a slab with CO) to this .pt file")
    parser.add_argument("--import-fixtures", type=Path, help="write trainer checkpoints and their predictions (tests/test_import.py) here")
    arguments = parser.parse_args()
    if arguments.bases_fixture:
        write_bases_fixture(arguments.bases_fixture)
    if arguments.parity_fixture:
        write_parity_fixture(arguments.parity_fixture)
    if arguments.caps_fixture:
        write_caps_fixture(arguments.caps_fixture)
    if arguments.import_fixtures:
        write_import_fixtures(arguments.import_fixtures)
    if arguments.indices:
        compare_indices()
    if arguments.fixture:
        write_fixture(arguments.fixture)
    if arguments.counts:
        parameter_counts()
    if arguments.evaluate:
        evaluate_small()
    if not (arguments.counts or arguments.evaluate or arguments.fixture or arguments.indices or arguments.bases_fixture
            or arguments.parity_fixture or arguments.caps_fixture or arguments.import_fixtures):
        parser.print_help()


if __name__ == "__main__":
    main()
