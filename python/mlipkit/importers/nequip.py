"""nequip (0.7 to 0.19) Lightning checkpoints as mlipkit NequIP models.

nequip-train's ``*.ckpt`` holds the model's builder arguments
(``hyper_parameters["model"]``, Hydra-resolved), its weights under
``model.<...>.func.`` and, with the EMA training module, the averaged weights
(``ema.ema_weight_<i>``, in parameter order) that nequip compiles and
evaluates with. mlipkit's NequIP reproduces nequip's architecture through its
nequip >= 0.7 options (see models/nequip.py); the weights carry over with
constant factors folded in:

- the type embedding: nequip's embedding table is an e3nn linear map of the
  one-hot type here (which divides by sqrt(number of types));
- the radial MLPs: nequip scales each layer by gain / sqrt(fan-in) and uses a
  plain SiLU, e3nn by 1 / sqrt(fan-in) after an SiLU normalised to unit
  second moment; nequip's Bessel embedding is sqrt(2 / r_max) times mlipkit's;
  and nequip's edge vectors point from the centre to the neighbour, mlipkit's
  the other way, which flips the sign of the odd-l spherical harmonics: the
  radial weights of those paths change sign;
- the readout MLP's layer factors, as for the radial MLP.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from mlipkit.importers.isolated_atoms import isolated_atom_network_energies
from mlipkit.importers.unpickling import UnsupportedModel
from mlipkit.models.potential import Potential
from mlipkit.models.registry import build_model

#: nequip versions whose checkpoints this reads (0.19.1 is tested; 0.7 introduced this layout)
SUPPORTED_VERSIONS = ((0, 7), (0, 19))
BUILDERS = ("nequip.model.NequIPGNNModel", "nequip.model.PresetNequIPGNNModel")
#: nequip's presets (PresetNequIPGNNModel), as nequip 0.19.1 defines them
PRESETS = {
    "S": {"num_layers": 2, "l_max": 1, "num_features": [128, 64]},
    "M": {"num_layers": 4, "l_max": 2, "num_features": [128, 64, 32]},
    "L": {"num_layers": 6, "l_max": 3, "num_features": [128, 64, 32, 32]},
    "XL": {"num_layers": 6, "l_max": 4, "num_features": [320, 96, 64, 32, 32]},
}
PRESET_SHARED = {"parity": False, "type_embed_num_features": 32, "radial_mlp_depth": 1, "radial_mlp_width": 128}
#: NequIPGNNModel's defaults (nequip 0.19.1)
DEFAULTS = {
    "num_layers": 4, "l_max": 1, "parity": True, "num_features": 32, "type_embed_num_features": None,
    "radial_mlp_depth": 1, "radial_mlp_width": 128, "readout_mlp_hidden_layers_depth": 0,
    "readout_mlp_hidden_layers_width": None, "readout_mlp_nonlinearity": "silu", "num_bessels": 8,
    "bessel_trainable": False, "polynomial_cutoff_p": 6, "per_type_energy_scales_trainable": False,
    "per_type_energy_shifts_trainable": False, "do_derivatives": True,
}
#: builder arguments mlipkit reproduces only at these values
REQUIRED = {
    "pair_potential": None, "per_edge_type_cutoff": None, "categorical_graph_field_embed": None, "convnet_sc": True,
    "learnable_shift": False, "convnet_resnet": False, "convnet_nonlinearity_type": "gate",
}
#: arguments of nequip's model builder that do not shape the network
IGNORED = ("_target_", "seed", "model_dtype", "compile_mode", "type_names", "r_max", "preset")
WEIGHTS_PREFIX = re.compile(r"^((?:\w+\.)*)type_embed\.embed_module\.weight$")
#: what nequip-package writes under the package root
PACKAGE_MODEL, PACKAGE_CONFIG, PACKAGE_METADATA = "model/eager_model.pkl", "model/config.yaml", "model/package_metadata.txt"


def is_nequip_checkpoint(value: Any) -> bool:
    return isinstance(value, dict) and "pytorch-lightning_version" in value and isinstance(value.get("hyper_parameters"), dict)


def is_nequip_package(path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/" + PACKAGE_METADATA) for name in archive.namelist())


def read_package(path) -> dict[str, Any]:
    """A ``.nequip.zip`` (nequip-package) as a checkpoint-like dict: its config's model arguments, the versions
    it records and the packaged (evaluation) model's weights. Its Python code is never read."""
    import yaml

    from mlipkit.importers.unpickling import load_package_records, named_tensors

    records, files = load_package_records(path, PACKAGE_MODEL)
    try:
        config = yaml.safe_load(files[PACKAGE_CONFIG])
        metadata = yaml.safe_load(files[PACKAGE_METADATA])
    except (KeyError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: the package's config or metadata is missing or unreadable ({error})") from None
    model = (config.get("training_module") or {}).get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path}: the package's config.yaml has no training_module.model section")
    return {
        "hyper_parameters": {"model": model, "info_dict": {"versions": metadata.get("versions") or {}}},
        "state_dict": dict(named_tensors(records)),
    }


def nequip_version(checkpoint: dict[str, Any]) -> str:
    """The nequip version that wrote the checkpoint; refused outside the versions this reads."""
    versions = ((checkpoint["hyper_parameters"].get("info_dict") or {}).get("versions") or {})
    version = versions.get("nequip")
    parts = tuple(int(part) for part in re.findall(r"\d+", str(version))[:2]) if version else ()
    if len(parts) < 2 or not SUPPORTED_VERSIONS[0] <= parts <= SUPPORTED_VERSIONS[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED_VERSIONS)
        raise UnsupportedModel(f"the checkpoint was written by nequip {version or '(version not recorded)'}; mlipkit reads nequip {low} to {high}.x checkpoints")
    return str(version)


def builder_arguments(model: dict[str, Any]) -> dict[str, Any]:
    """NequIPGNNModel's arguments, presets and defaults filled in."""
    target = model.get("_target_")
    if target not in BUILDERS:
        raise UnsupportedModel(f"the checkpoint's model is built by '{target}'; mlipkit imports {' and '.join(BUILDERS)}")
    arguments = dict(DEFAULTS)
    if target.endswith("PresetNequIPGNNModel"):
        preset = str(model.get("preset", "")).upper()
        if preset not in PRESETS:
            raise UnsupportedModel(f"unknown nequip preset '{model.get('preset')}' (nequip 0.19.1 has {list(PRESETS)})")
        arguments.update(PRESET_SHARED, **PRESETS[preset])
    arguments.update(model)
    for name, supported in REQUIRED.items():
        if arguments.get(name, supported) != supported:
            raise UnsupportedModel(f"the nequip model sets {name}={arguments[name]!r}; mlipkit reproduces only {supported!r}")
    return arguments


def mlipkit_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """mlipkit NequIP options equal to nequip's NequIPGNNModel arguments."""
    from e3nn import o3

    l_max = int(arguments["l_max"])
    features = arguments["num_features"]
    features = [int(features)] * (l_max + 1) if isinstance(features, int) else [int(count) for count in features]
    parities = lambda l: (1, -1) if arguments["parity"] else ((1,) if l % 2 == 0 else (-1,))  # noqa: E731
    hidden = o3.Irreps([(features[l], (l, p)) for l in range(l_max + 1) for p in parities(l)])
    neighbours = arguments.get("avg_num_neighbors")
    if isinstance(neighbours, dict):
        if len(set(neighbours.values())) != 1:
            raise UnsupportedModel(f"per-type avg_num_neighbors {neighbours}: mlipkit normalises by one number")
        neighbours = next(iter(neighbours.values()))
    scalars, gates = arguments.get("convnet_nonlinearity_scalars"), arguments.get("convnet_nonlinearity_gates")
    if scalars is not None and gates is not None and dict(scalars) != dict(gates):
        raise UnsupportedModel(f"different scalar {scalars} and gate {gates} nonlinearities; mlipkit uses one pair")
    options = {
        "num_layers": int(arguments["num_layers"]), "max_ell": l_max, "parity": True, "target_irreps": str(hidden),
        "type_embed_num_features": arguments["type_embed_num_features"] or features[0],
        "radial_mlp_hidden": [int(arguments["radial_mlp_width"])] * int(arguments["radial_mlp_depth"]),
        "num_bessel": int(arguments["num_bessels"]), "bessel_basis_trainable": bool(arguments["bessel_trainable"]),
        "num_polynomial_cutoff": int(arguments["polynomial_cutoff_p"]), "avg_num_neighbours": neighbours,
        "self_connection": True, "resnet": False, "first_layer_self_connection": False,
        "type_embedding_self_connection": True, "scalar_last_layer": True,
        "readout_mlp_hidden_layers_depth": int(arguments["readout_mlp_hidden_layers_depth"]),
        "readout_mlp_hidden_layers_width": arguments["readout_mlp_hidden_layers_width"],
        "readout_mlp_nonlinearity": arguments["readout_mlp_nonlinearity"],
        "per_type_energy_scales_trainable": bool(arguments["per_type_energy_scales_trainable"]),
        "per_type_energy_shifts_trainable": bool(arguments["per_type_energy_shifts_trainable"]),
        "do_derivatives": bool(arguments["do_derivatives"]),
    }
    if scalars is not None:
        options["gate_nonlinearities"] = dict(scalars)
    if options["readout_mlp_hidden_layers_depth"] > 1:
        raise UnsupportedModel("a readout MLP of more than one hidden layer; mlipkit's NequIP has at most one")
    return options


def mlp_weights(state: dict[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    """The layers of one of nequip's ScalarMLPFunctions: Sequential (``mlp.<i>.weight``) or merged linear layers."""
    found = sorted((int(m[1]), name) for name in state if (m := re.fullmatch(re.escape(prefix) + r"mlp\.(?:weights\.)?(\d+)(?:\.weight)?", name)))
    return [state[name].to(torch.float64) for _, name in found]


def nequip_layer_factors(widths: list[int], nonlinear: bool) -> list[float]:
    """nequip's per-layer factor gain / sqrt(fan-in) (forward initialisation; gain sqrt(2) after a nonlinearity)."""
    return [(1.0 if index == 0 or not nonlinear else math.sqrt(2.0)) / math.sqrt(width) for index, width in enumerate(widths)]


def radial_weights(mlp: torch.nn.Module, weights: list[torch.Tensor], input_factor: float) -> list[torch.Tensor]:
    """nequip's radial MLP as e3nn FullyConnectedNet weights (see the module docstring)."""
    factors = nequip_layer_factors([w.shape[0] for w in weights], nonlinear=len(weights) > 1)
    converted, previous_scale = [], 1.0 / input_factor
    for layer, weight, factor in zip(mlp, weights, factors):
        if layer.act is not None:
            divisor = (layer.h_in * layer.var_in) ** 0.5
            scale = (1.0 if layer.act._is_id else layer.act.cst) * layer.var_out**0.5
        else:
            divisor, scale = (layer.h_in * layer.var_in / layer.var_out) ** 0.5, 1.0
        converted.append(weight * factor * divisor / previous_scale)
        previous_scale = scale
    return converted


def odd_edge_columns(convolution: torch.nn.Module) -> torch.Tensor:
    """+1/-1 per radial output: -1 on the paths through odd-l spherical harmonics (edge vectors reversed)."""
    signs = []
    tensor_product = convolution.tensor_product
    for instruction in tensor_product.instructions:
        l_edge = tensor_product.irreps_in2[instruction.i_in2].ir.l
        signs += [(-1.0) ** l_edge] * int(torch.tensor(instruction.path_shape).prod())
    return torch.tensor(signs, dtype=torch.float64)


def model_state(checkpoint: dict[str, Any], arguments: dict[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    """The weights' common prefix and the state dict, the EMA weights (what nequip evaluates with) in place."""
    state = checkpoint["state_dict"]
    prefixes = [m[1] for name in state if (m := WEIGHTS_PREFIX.match(name))]
    if len(prefixes) != 1:
        raise UnsupportedModel(f"the checkpoint holds {len(prefixes)} models ({prefixes}); mlipkit imports one")
    prefix = prefixes[0]
    ema = [value for _, value in sorted((int(name.rsplit("_", 1)[1]), value) for name, value in state.items() if name.startswith("ema.ema_weight_"))]
    if not ema:
        return prefix, dict(state)
    # the model's parameters in registration order: its state-dict entries less buffers and empty tensors
    buffers = {"output_mask", "_rmax_recip", "_empty"}
    for name, trainable in (("bessel_weights", "bessel_trainable"), ("scales", "per_type_energy_scales_trainable"),
                            ("shifts", "per_type_energy_shifts_trainable")):
        if not arguments[trainable]:
            buffers.add(name)
    # (e3nn's generated tensor-product code keeps its Wigner 3j blocks as buffers; the weights come from the MLPs)
    parameters = [name for name, value in state.items()
                  if name.startswith(prefix) and value.numel() and name.rsplit(".", 1)[-1] not in buffers
                  and ".tp_scatter." not in name]
    if len(parameters) != len(ema) or any(state[n].shape != v.shape for n, v in zip(parameters, ema)):
        raise UnsupportedModel(f"the checkpoint's {len(ema)} EMA weights do not line up with its model's {len(parameters)} parameters")
    return prefix, {**state, **dict(zip(parameters, ema))}


def build_nequip_model(checkpoint: dict[str, Any]) -> Potential:
    """The mlipkit NequIP equal to nequip's evaluation model of ``checkpoint``, in nequip's dtype."""
    nequip_version(checkpoint)
    model_config = dict(checkpoint["hyper_parameters"]["model"])
    arguments = builder_arguments(model_config)
    options = mlipkit_options(arguments)
    prefix, state = model_state(checkpoint, arguments)
    type_names = [str(name) for name in model_config["type_names"]]
    dtype = torch.float32 if str(model_config.get("model_dtype", "float32")) == "float32" else torch.float64
    model = build_model("nequip", type_names=type_names, r_max=float(model_config["r_max"]), **options)
    core = model.core

    def tensor(name: str) -> torch.Tensor:
        if prefix + name not in state:
            raise UnsupportedModel(f"the nequip weights lack '{name}': the model is not the one its arguments describe")
        return state[prefix + name].to(torch.float64)

    embedding = tensor("type_embed.embed_module.weight")
    weights = {"core.embedding.linear.weight": (embedding * math.sqrt(len(type_names))).flatten()}
    r_max = float(model_config["r_max"])
    weights["core.radial_embedding.basis.frequencies"] = tensor("bessel_encode.bessel_weights").flatten() * math.pi
    for index, layer in enumerate(core.layers):
        convolution = layer.convolution
        nequip_layer = f"layer{index}_convnet.conv."
        weights[f"core.layers.{index}.convolution.linear_in.weight"] = tensor(nequip_layer + "linear_1.weight")
        weights[f"core.layers.{index}.convolution.linear_out.weight"] = tensor(nequip_layer + "linear_2.weight")
        if convolution.self_connection is not None:
            weights[f"core.layers.{index}.convolution.self_connection.weight"] = tensor(nequip_layer + "sc.weight")
        radial = radial_weights(convolution.radial, mlp_weights(state, prefix + nequip_layer + "edge_mlp."), math.sqrt(2.0 / r_max))
        radial[-1] = radial[-1] * odd_edge_columns(convolution)
        for k, weight in enumerate(radial):
            weights[f"core.layers.{index}.convolution.radial.layer{k}.weight"] = weight
    readout = mlp_weights(state, prefix + "per_atom_energy_readout.mlp_module.")
    factors = nequip_layer_factors([w.shape[0] for w in readout], nonlinear=len(readout) > 1)
    scaled = [w * f * math.sqrt(w.shape[0]) for w, f in zip(readout, factors)]
    if len(scaled) == 1:
        weights["core.readout.weight"] = scaled[0].flatten()
    else:
        weights["core.readout.hidden.weight"], weights["core.readout.out.weight"] = (w.flatten() for w in scaled)
    expected = model.state_dict()
    for name, value in weights.items():
        if name not in expected or expected[name].numel() != value.numel():
            raise UnsupportedModel(f"nequip's weight for {name} has {value.numel()} entries; mlipkit's NequIP expects "
                                   f"{expected[name].numel() if name in expected else 'none'}")
        weights[name] = value.reshape(expected[name].shape)
    model.load_state_dict(weights, strict=False)
    unset = [name for name, _ in model.named_parameters() if name not in weights and not name.startswith("scale_shift.")]
    if unset:
        raise UnsupportedModel(f"no nequip weights for {unset[:4]}")
    count = len(type_names)
    scales = state.get(prefix + "per_type_energy_scale_shift.scales")
    shifts = state.get(prefix + "per_type_energy_scale_shift.shifts")
    scales = scales.to(torch.float64).flatten().expand(count) if scales is not None else torch.ones(count, dtype=torch.float64)
    shifts = shifts.to(torch.float64).flatten().expand(count) if shifts is not None else torch.zeros(count, dtype=torch.float64)
    network = isolated_atom_network_energies(model, lambda features: core.read_out(core.readout, features))
    shifts = shifts + scales * torch.tensor(network, dtype=torch.float64)
    with torch.no_grad():
        model.scale_shift.shifts.copy_(shifts)
        model.scale_shift.scales.copy_(scales)
    model.config.per_type_energy_shifts = shifts.tolist()
    model.config.per_type_energy_scales = scales.tolist()
    return model.to(dtype).eval()
