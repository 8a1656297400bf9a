"""mace-torch models as mlipkit MACE models.

A mace-torch model is described by hyperparameters (read from the records of
a pickled module, or from the run arguments of a state-dict checkpoint) and
its tensors under mace-torch's state-dict names. mlipkit's MACE follows
mace-torch's structure, so most tensors only change names; three need more:

- the radial MLP's last layer, whose columns mace-torch orders by output irrep;
- the product-basis weights, which multiply coupling tensors built by another
  e3nn version, in another convention (original or reduced) and with other
  signs: each of mace-torch's couplings, written as a polynomial in the
  atomic basis, is solved for as a combination of mlipkit's (least squares,
  checked exact), and its weights are carried over by that combination;
- the energies: mace-torch adds E0 per atom to ``scale * network + shift``,
  mlipkit measures each atom from its type's isolated-atom network value, so
  mlipkit's per-type shift is E0 + shift + scale * (the network on an isolated
  atom of that type).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols
from e3nn import o3

from mlipkit.importers.isolated_atoms import isolated_atom_network_energies
from mlipkit.importers.unpickling import PickledObject, UnsupportedModel, named_modules, named_tensors
from mlipkit.models.potential import Potential
from mlipkit.models.registry import build_model
from mlipkit.nn.symmetric_contraction import coupling_basis, monomial_couplings

MODEL_CLASSES = {"mace.modules.models.MACE": "MACE", "mace.modules.models.ScaleShiftMACE": "ScaleShiftMACE"}
RESIDUAL_BLOCK = "RealAgnosticResidualInteractionBlock"
FIRST_BLOCKS = (RESIDUAL_BLOCK, "RealAgnosticInteractionBlock")
#: the top-level blocks of the mace-torch models mlipkit reproduces; any other (pair repulsion, embedding
#: readouts, joint embeddings, LES) is an option mlipkit's MACE lacks
KNOWN_BLOCKS = {
    "node_embedding", "radial_embedding", "spherical_harmonics", "atomic_energies_fn",
    "interactions", "products", "readouts", "scale_shift",
}
#: model attributes that change the architecture, with the value mlipkit reproduces
REQUIRED_FLAGS = {
    "use_so3": False, "use_agnostic_product": False, "use_last_readout_only": False, "apply_cutoff": True,
    "edge_irreps": None, "pair_repulsion": False, "use_embedding_readout": False,
}
#: the activations a mace-torch file names, as mlipkit activation names
ACTIVATIONS = {
    "torch.nn.functional.silu": "silu", "torch.tanh": "tanh", "torch.sigmoid": "sigmoid",
    "torch._C._VariableFunctionsClass.tanh": "tanh", "torch._C._VariableFunctionsClass.sigmoid": "sigmoid",
}
#: mace_run_train's defaults for the run arguments that shape a model
RUN_ARGUMENT_DEFAULTS = {
    "model": "MACE", "interaction": RESIDUAL_BLOCK, "interaction_first": RESIDUAL_BLOCK, "max_ell": 3, "correlation": 3,
    "radial_MLP": "[64, 64, 64]", "MLP_irreps": "16x0e", "gate": "silu", "num_radial_basis": 8, "num_cutoff_basis": 5,
    "use_reduced_cg": False, "radial_type": "bessel", "distance_transform": "None", "pair_repulsion": False,
    "use_so3": False, "use_agnostic_product": False, "use_last_readout_only": False, "apply_cutoff": True,
    "use_embedding_readout": False, "edge_irreps": None,
}
#: a coupling of mace-torch's that mlipkit's couplings reproduce to no better than this (relative; a float32
#: file's couplings are rounded, allow 100 roundings there) is not in their span
COUPLING_TOLERANCE = 1e-10


@dataclass
class MaceModel:
    """A mace-torch model as mlipkit rebuilds it: MACE options, mace-named tensors, energy terms."""

    model_class: str
    options: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    atomic_numbers: list[int]
    atomic_energies: list[float]
    scale: float = 1.0
    shift: float = 0.0
    dtype: torch.dtype = torch.float64


def irreps_of(value: Any) -> o3.Irreps:
    """An e3nn ``Irreps`` from its pickled record (Irreps -> _MulIr -> Irrep), or from its string."""
    if isinstance(value, str):
        return o3.Irreps(value)
    if isinstance(value, PickledObject) and value.global_name == "e3nn.o3._irreps.Irreps":
        terms = []
        for mul_ir in value.args[0]:
            multiplicity, irrep = mul_ir.args[0]
            terms.append((int(multiplicity), tuple(int(x) for x in irrep.args[0])))
        return o3.Irreps(terms)
    raise UnsupportedModel(f"expected e3nn irreps in the file, found {value!r}")


def short_name(record: PickledObject) -> str:
    return record.global_name.rsplit(".", 1)[-1]


def activation_of(module: PickledObject, where: str) -> str:
    """The activation an e3nn ``normalize2mom`` wraps (mace-torch's gates and radial MLP)."""
    function = module.attributes.get("f")
    name = getattr(function, "global_name", repr(function))
    if name not in ACTIVATIONS:
        raise UnsupportedModel(f"{where} uses the activation '{name}', which mlipkit does not have")
    return ACTIVATIONS[name]


def describe_model_file(model: PickledObject) -> MaceModel:
    """The hyperparameters and tensors of a pickled mace-torch ``MACE``/``ScaleShiftMACE`` module."""
    if model.global_name not in MODEL_CLASSES:
        raise UnsupportedModel(
            f"the file holds a mace-torch '{model.global_name}', not one of the models mlipkit imports "
            f"({', '.join(MODEL_CLASSES.values())})"
        )
    attributes = model.attributes
    modules = dict(attributes.get("_modules") or {})
    extra_blocks = sorted(set(modules) - KNOWN_BLOCKS)
    if extra_blocks:
        raise UnsupportedModel(f"the mace-torch model has the block(s) {extra_blocks}, which mlipkit's MACE lacks")
    for flag, supported in REQUIRED_FLAGS.items():
        if attributes.get(flag, supported) != supported:
            raise UnsupportedModel(f"the mace-torch model sets {flag}={attributes[flag]!r}; mlipkit's MACE supports only {supported!r}")
    heads = attributes.get("heads") or ["Default"]
    if len(heads) != 1:
        raise UnsupportedModel(f"the mace-torch model has {len(heads)} heads {heads}; mlipkit imports single-head models")
    radial = model.radial_embedding
    radial_modules = radial.attributes.get("_modules") or {}
    if set(radial_modules) - {"bessel_fn", "cutoff_fn"}:
        extra = sorted(set(radial_modules) - {"bessel_fn", "cutoff_fn"})
        raise UnsupportedModel(f"the mace-torch radial embedding has {extra} (a distance transform); mlipkit's MACE lacks it")
    if short_name(radial.bessel_fn) != "BesselBasis":
        raise UnsupportedModel(f"the mace-torch radial basis is {short_name(radial.bessel_fn)}; mlipkit's MACE uses the Bessel basis")
    if short_name(radial.cutoff_fn) != "PolynomialCutoff":
        raise UnsupportedModel(f"the mace-torch cutoff function is {short_name(radial.cutoff_fn)}; mlipkit's MACE uses PolynomialCutoff")
    sh = model.spherical_harmonics.attributes
    if sh.get("normalization", "component") != "component" or not sh.get("normalize", True):
        raise UnsupportedModel("the mace-torch spherical harmonics are not normalised by component")

    interactions = [child for _, child in sorted((model.interactions.attributes["_modules"]).items(), key=lambda kv: int(kv[0]))]
    blocks = [short_name(block) for block in interactions]
    if blocks[0] not in FIRST_BLOCKS:
        raise UnsupportedModel(
            f"the model's first interaction block is {blocks[0]}, which mlipkit's MACE does not have ({' or '.join(FIRST_BLOCKS)})"
        )
    later = sorted(set(blocks[1:]) - {RESIDUAL_BLOCK})
    if later:
        raise UnsupportedModel(f"the model's later interaction blocks include {later}, which mlipkit's MACE does not have there ({RESIDUAL_BLOCK})")
    neighbours = {float(block.attributes["avg_num_neighbors"]) for block in interactions}
    if len(neighbours) != 1:
        raise UnsupportedModel(f"the interaction blocks use different avg_num_neighbors {sorted(neighbours)}; mlipkit uses one")
    for index, block in enumerate(interactions):
        for _, module in named_modules(block.conv_tp_weights):
            if short_name(module) == "normalize2mom" and activation_of(module, f"interaction {index}'s radial MLP") != "silu":
                raise UnsupportedModel(f"interaction {index}'s radial MLP does not use silu, as mlipkit's MACE does")
    products = [child for _, child in sorted(model.products.attributes["_modules"].items(), key=lambda kv: int(kv[0]))]
    correlations = []
    for product in products:
        contractions = product.symmetric_contractions.contractions.attributes["_modules"]
        correlations.append(int(contractions["0"].attributes["correlation"]))
    readouts = [child for _, child in sorted(model.readouts.attributes["_modules"].items(), key=lambda kv: int(kv[0]))]
    expected = ["LinearReadoutBlock"] * (len(readouts) - 1) + ["NonLinearReadoutBlock" if len(readouts) > 1 else "LinearReadoutBlock"]
    found = [short_name(readout) for readout in readouts]
    if found != expected:
        raise UnsupportedModel(f"the mace-torch readouts are {found}; mlipkit's MACE has {expected}")
    options: dict[str, Any] = {
        "hidden_irreps": str(irreps_of(interactions[0].attributes["hidden_irreps"])),
        "max_ell": irreps_of(sh["irreps_out"]).lmax,
        "correlation": correlations if len(set(correlations)) > 1 else correlations[0],
        "num_interactions": len(interactions),
        "radial_mlp_hidden": [int(width) for width in interactions[0].attributes["radial_MLP"]],
        "interaction_first": blocks[0],
        "avg_num_neighbours": neighbours.pop(),
        "use_reduced_cg": bool(attributes.get("use_reduced_cg", False)),
    }
    if len(readouts) > 1:
        options["mlp_irreps"] = str(irreps_of(readouts[-1].attributes["hidden_irreps"]))
        options["gate"] = activation_of(readouts[-1].non_linearity.acts.attributes["_modules"]["0"], "the last readout")
    last_product_out = irreps_of(products[-1].linear.attributes["irreps_out"])
    options["keep_last_layer_irreps"] = last_product_out != irreps_of(options["hidden_irreps"]).filter(["0e"]) and len(products) > 1
    tensors = dict(named_tensors(model))
    options["bessel_basis_trainable"] = "bessel_weights" in (radial.bessel_fn.attributes.get("_parameters") or {})
    scale_shift = {}
    if MODEL_CLASSES[model.global_name] == "ScaleShiftMACE":
        scale_shift = {"scale": float(tensors["scale_shift.scale"].reshape(-1)[0]), "shift": float(tensors["scale_shift.shift"].reshape(-1)[0])}
    return MaceModel(
        model_class=MODEL_CLASSES[model.global_name],
        options=options,
        tensors=tensors,
        atomic_numbers=[int(z) for z in tensors["atomic_numbers"]],
        atomic_energies=[float(e) for e in tensors["atomic_energies_fn.atomic_energies"].reshape(-1)],
        dtype=tensors["atomic_energies_fn.atomic_energies"].dtype,
        **scale_shift,
    )


def read_run_arguments(path: str | Path) -> dict[str, Any]:
    """mace_run_train's arguments from its YAML config (``--config``) or a JSON of them."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run arguments not found: {path}")
    try:
        arguments = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a YAML or JSON file of mace_run_train arguments ({str(error).splitlines()[0]})") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"{path}: expected a mapping of mace_run_train arguments, found {type(arguments).__name__}")
    return arguments


def describe_state_dict(state: dict[str, torch.Tensor], arguments: dict[str, Any], arguments_name: str) -> MaceModel:
    """A mace_run_train state-dict checkpoint: shapes and buffers from ``state``, the rest from its run arguments."""
    given = {key.lstrip("-").replace("-", "_"): value for key, value in arguments.items()}
    settings = {**RUN_ARGUMENT_DEFAULTS, **{key: value for key, value in given.items() if value is not None}}
    if settings["model"] not in MODEL_CLASSES.values():
        raise UnsupportedModel(f"run arguments {arguments_name}: model={settings['model']!r}; mlipkit imports {', '.join(MODEL_CLASSES.values())}")
    for flag in ("use_so3", "use_agnostic_product", "use_last_readout_only", "pair_repulsion", "use_embedding_readout"):
        if settings[flag] not in (False, "False", "false"):
            raise UnsupportedModel(f"run arguments {arguments_name}: {flag}={settings[flag]!r}, an option mlipkit's MACE lacks")
    for option, supported in (("radial_type", "bessel"), ("distance_transform", "None"), ("interaction", RESIDUAL_BLOCK)):
        if str(settings[option]) != supported:
            raise UnsupportedModel(f"run arguments {arguments_name}: {option}={settings[option]!r}; mlipkit's MACE supports only {supported!r}")
    if settings["interaction_first"] not in FIRST_BLOCKS:
        raise UnsupportedModel(f"run arguments {arguments_name}: interaction_first={settings['interaction_first']!r}; mlipkit has {FIRST_BLOCKS}")
    if settings.get("heads") and len(settings["heads"]) > 1:
        raise UnsupportedModel(f"run arguments {arguments_name}: {len(settings['heads'])} heads; mlipkit imports single-head models")
    if "avg_num_neighbors" not in given:
        raise ValueError(
            f"{arguments_name}: avg_num_neighbors is missing; mace_run_train computes it from the data and logs it "
            "('Average number of neighbors: ...'): add that value"
        )
    if given.get("hidden_irreps"):
        hidden = str(o3.Irreps(given["hidden_irreps"]))
    elif given.get("num_channels") is not None and given.get("max_L") is not None:
        hidden = " + ".join(f"{given['num_channels']}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(int(given["max_L"]) + 1))
    else:
        hidden = "128x0e + 128x1o"
    radial_mlp = settings["radial_MLP"]
    if isinstance(radial_mlp, str):
        radial_mlp = json.loads(radial_mlp)
    num_interactions = int(state["num_interactions"]) if "num_interactions" in state else int(settings.get("num_interactions", 2))
    options = {
        "hidden_irreps": hidden, "max_ell": int(settings["max_ell"]), "correlation": int(settings["correlation"]),
        "num_interactions": num_interactions, "radial_mlp_hidden": [int(width) for width in radial_mlp],
        "interaction_first": settings["interaction_first"], "avg_num_neighbours": float(given["avg_num_neighbors"]),
        "use_reduced_cg": settings["use_reduced_cg"] in (True, "True", "true"),
        "mlp_irreps": str(o3.Irreps(settings["MLP_irreps"])), "gate": settings["gate"],
        "keep_last_layer_irreps": bool(given.get("keep_last_layer_irreps", False)),
        "bessel_basis_trainable": False,
    }
    missing = [name for name in ("atomic_numbers", "r_max", "atomic_energies_fn.atomic_energies") if name not in state]
    if missing:
        raise ValueError(f"the checkpoint's state dict lacks {missing}: not a mace-torch MACE state dict")
    scale_shift = {}
    if settings["model"] == "ScaleShiftMACE":
        if "scale_shift.scale" not in state:
            raise ValueError(f"{arguments_name} names a ScaleShiftMACE, but the state dict has no scale_shift.scale")
        scale_shift = {"scale": float(state["scale_shift.scale"].reshape(-1)[0]), "shift": float(state["scale_shift.shift"].reshape(-1)[0])}
    return MaceModel(
        model_class=settings["model"],
        options=options,
        tensors=dict(state),
        atomic_numbers=[int(z) for z in state["atomic_numbers"]],
        atomic_energies=[float(e) for e in state["atomic_energies_fn.atomic_energies"].reshape(-1)],
        dtype=state["atomic_energies_fn.atomic_energies"].dtype,
        **scale_shift,
    )


def renamed_tensors(model: Potential) -> dict[str, str]:
    """mace-torch's state-dict name of each mlipkit MACE weight that carries over unchanged."""
    names = {
        "node_embedding.linear.weight": "core.embedding.linear.weight",
        "readouts.0.linear.weight": "core.readouts.0.weight",
    }
    layers = model.core.layers
    hidden_layers = len(model.config.radial_mlp_hidden)
    for i in range(len(layers)):
        names.update({
            f"interactions.{i}.linear_up.weight": f"core.layers.{i}.convolution.linear_in.weight",
            f"interactions.{i}.linear.weight": f"core.layers.{i}.convolution.linear_out.weight",
            f"interactions.{i}.skip_tp.weight": f"core.layers.{i}.self_connection.weight",
            f"products.{i}.linear.weight": f"core.layers.{i}.linear.weight",
        })
        names.update({
            f"interactions.{i}.conv_tp_weights.layer{k}.weight": f"core.layers.{i}.convolution.radial.layer{k}.weight"
            for k in range(hidden_layers)
        })
        if i > 0:
            readout = "core.readouts" + f".{i}"
            if i == len(layers) - 1:
                names.update({f"readouts.{i}.linear_1.weight": f"{readout}.hidden.weight", f"readouts.{i}.linear_2.weight": f"{readout}.out.weight"})
            else:
                names[f"readouts.{i}.linear.weight"] = f"{readout}.weight"
    return names


def radial_output_columns(model: Potential, layer: int, mace_last_layer: torch.Tensor) -> torch.Tensor:
    """The radial MLP's last layer with its column blocks moved from mace-torch's order (by output irrep) to mlipkit's."""
    instructions = model.core.layers[layer].convolution.tensor_product.instructions
    widths = [int(torch.tensor(instruction.path_shape).prod()) for instruction in instructions]
    mace_order = sorted(range(len(widths)), key=lambda n: instructions[n].i_out)
    by_instruction = dict(zip(mace_order, mace_last_layer.split([widths[n] for n in mace_order], dim=1)))
    return torch.cat([by_instruction[n] for n in range(len(widths))], dim=1)


def mace_coupling_monomials(u_matrix: torch.Tensor, order: int, dimension: int) -> torch.Tensor:
    """mace-torch's U_matrix_nu ([d,] D x nu, K) as polynomials in the atomic basis: [K, d * monomials]."""
    if u_matrix.dim() == order + 1:
        u_matrix = u_matrix.unsqueeze(0)
    count = u_matrix.shape[-1]
    couplings = u_matrix.reshape(u_matrix.shape[0], -1, count).permute(2, 0, 1).to(torch.float64)
    return monomial_couplings(couplings, order, dimension)[0].flatten(1)


def product_weights(model: Potential, layer: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mace-torch's product-basis weights of ``layer`` as weights of mlipkit's couplings (exact: checked)."""
    product = model.core.layers[layer].product
    irreps_in = model.core.layers[layer].convolution.linear_out.irreps_out
    weights = {}
    for index, (_, ir_out) in enumerate(product.irreps_out):
        prefix = f"products.{layer}.symmetric_contractions.contractions.{index}"
        for order in range(1, product.correlation + 1):
            theirs_name = "weights_max" if order == product.correlation else f"weights.{product.correlation - order - 1}"
            theirs = tensors[f"{prefix}.{theirs_name}"].to(torch.float64)
            ours = coupling_basis(irreps_in, ir_out, order, model.config.use_reduced_cg)
            ours_monomials = monomial_couplings(ours, order, product.dimension)[0].flatten(1)
            theirs_monomials = mace_coupling_monomials(tensors[f"{prefix}.U_matrix_{order}"], order, product.dimension)
            if theirs.shape[1] == 0 or ours.shape[0] == 0:
                if theirs.shape[1] and theirs_monomials.abs().max() > 0:
                    raise UnsupportedModel(f"mace-torch couples layer {layer}'s basis to {ir_out} at order {order}; mlipkit finds no coupling")
                continue
            solution = torch.linalg.lstsq(ours_monomials.T, theirs_monomials.T, driver="gelsd").solution  # [K_ours, K_theirs]
            error = (ours_monomials.T @ solution - theirs_monomials.T).abs().max()
            tolerance = max(COUPLING_TOLERANCE, 100 * torch.finfo(tensors[f"{prefix}.U_matrix_{order}"].dtype).eps)
            if error > tolerance * max(float(theirs_monomials.abs().max()), 1.0):
                raise UnsupportedModel(
                    f"mace-torch's couplings of layer {layer} to {ir_out} at order {order} are not in the span of mlipkit's "
                    f"(residual {float(error):.1e}): another convention for the atomic basis"
                )
            weights[f"core.layers.{layer}.product.weight_{index}_{order}"] = torch.einsum("ekc,jk->ejc", theirs, solution)
    return weights


def build_mace_model(description: MaceModel) -> Potential:
    """The mlipkit MACE model equal to the described mace-torch model, in its dtype."""
    tensors = description.tensors
    type_names = [chemical_symbols[z] for z in description.atomic_numbers]
    r_max = float(tensors["r_max"]) if "r_max" in tensors else float(tensors["radial_embedding.bessel_fn.r_max"])
    options = dict(description.options)
    options["num_bessel"] = int(tensors["radial_embedding.bessel_fn.bessel_weights"].numel())
    options["num_polynomial_cutoff"] = int(tensors["radial_embedding.cutoff_fn.p"])
    model = build_model("mace", type_names=type_names, r_max=r_max, **options)
    names = renamed_tensors(model)
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise UnsupportedModel(f"the mace-torch weights lack {missing[:4]}: the model's structure is not the one its options describe")
    state = {ours: tensors[theirs].to(torch.float64) for theirs, ours in names.items()}
    hidden_layers = len(model.config.radial_mlp_hidden)
    for layer in range(len(model.core.layers)):
        last = f"interactions.{layer}.conv_tp_weights.layer{hidden_layers}.weight"
        state[f"core.layers.{layer}.convolution.radial.layer{hidden_layers}.weight"] = radial_output_columns(model, layer, tensors[last].to(torch.float64))
        state.update(product_weights(model, layer, tensors))
    state["core.radial_embedding.basis.frequencies"] = tensors["radial_embedding.bessel_fn.bessel_weights"].to(torch.float64) * r_max
    expected = model.state_dict()
    for name, value in state.items():
        if name not in expected or expected[name].shape != value.shape:
            shape = tuple(expected[name].shape) if name in expected else "nothing"
            raise UnsupportedModel(f"mace-torch's weight for {name} has shape {tuple(value.shape)}, mlipkit's MACE expects {shape}")
    model.load_state_dict(state, strict=False)
    unset = [name for name, _ in model.named_parameters() if name not in state]
    if unset:
        raise UnsupportedModel(f"no mace-torch weights for {unset[:4]}")
    network = isolated_atom_network_energies(model, lambda features: model.core.read_out(model.core.readouts, features))
    shifts = [e0 + description.shift + description.scale * value for e0, value in zip(description.atomic_energies, network)]
    model.scale_shift.shifts.copy_(torch.tensor(shifts, dtype=torch.float64))
    model.scale_shift.scales.fill_(description.scale)
    model.config.per_type_energy_shifts = shifts
    model.config.per_type_energy_scales = [description.scale] * len(shifts)
    return model.to(description.dtype).eval()
