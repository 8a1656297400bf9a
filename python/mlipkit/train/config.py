"""The ``mlip-train`` config: validated YAML, with dataset statistics as hyperparameters.

Any model option may be a reference to a statistic of the training data,
``${training_data_stats:NAME}`` (the whole value, or inside a list or dict),
resolved before the model is built; the resolved config is what checkpoints
store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlipkit.data.statistics import DatasetStatistics
from mlipkit.models.config import LossConfig
from mlipkit.models.registry import model_entry
from mlipkit.train.losses import CHARGE_OUTPUTS

#: ``${training_data_stats:NAME}``
STATISTIC_REFERENCE = re.compile(r"^\$\{training_data_stats:([A-Za-z_]+)\}$")
#: Outputs the trainer can fit: energy (per atom), forces, stress, and the extra heads a model may have.
LOSS_OUTPUTS = (
    "energy", "forces", "stress", "graph_scalars", "graph_vectors", "node_scalars", "node_vectors", "charges", "total_charge",
    "dipole",
)
#: model option of each extra head (its ``loss`` is the default loss of that output)
HEAD_OPTIONS = {"graph_scalars": "y_graph_scalars", "graph_vectors": "y_graph_vector", "node_scalars": "y_node_scalars", "node_vectors": "y_node_vector"}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and the value."""


class DataConfig(BaseModel):
    """The ``data`` section: files, splits, batches and the label names."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    train: Path
    """extended XYZ file of training structures (paths are relative to the config file)"""
    validation: Path | None = None
    """validation file; without one, `validation_fraction` of `train` is held out"""
    test: Path | None = None
    """test file; without one, `test_fraction` of `train` is held out"""
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """share of `train` held out for validation when there is no validation file"""
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """share of `train` held out for testing when there is no test file"""
    type_names: list[str] | Literal["infer"] = "infer"
    """element names in model order, or `infer` (sorted by atomic number from the training data)"""
    batch_size: int = Field(4, gt=0)
    """structures per training batch"""
    validation_batch_size: int = Field(16, gt=0)
    """structures per validation batch"""
    shuffle_seed: int = 0
    """seed of the split and of the shuffling"""
    energy_key: str = "energy"
    """name of the energy label (calculator results, `info` or `arrays`)"""
    forces_key: str = "forces"
    """name of the forces label"""
    stress_key: str = "stress"
    """name of the stress label (6 Voigt, 9 or 3x3 values)"""
    charges_key: str = "charges"
    """name of the per-atom charges label"""
    total_charge_key: str = "total_charge"
    """looked for in the info under this key, then under `charge` (mlip's and ASE calculators' name)"""
    dipole_key: str = "dipole"
    """name of the dipole label"""

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("validation_fraction + test_fraction must leave some training data (sum < 1)")
        return self


class ModelSection(BaseModel):
    """``name`` from the registry; every other key is an option of that model (statistics allowed)."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    name: str
    """a registered model (`nequip`, `mace`, `gemnet_oc`, their variants); every other key is one of its options"""


class OptimizerConfig(BaseModel):
    """The ``optimizer`` section (mace_run_train's defaults)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: Literal["adam", "adamw"] = "adam"
    """`adam` or `adamw`"""
    lr: float = Field(0.01, gt=0.0)
    """learning rate"""
    weight_decay: float = Field(0.0, ge=0.0)
    """weight decay (L2 for adam, decoupled for adamw)"""
    amsgrad: bool = True
    """the AMSGrad variant"""


class SchedulerConfig(BaseModel):
    """The ``scheduler`` section."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: Literal["none", "reduce_on_plateau", "cosine"] = "reduce_on_plateau"
    """`reduce_on_plateau` (on the validation loss), `cosine` (to `min_lr` over the run) or `none`"""
    factor: float = Field(0.5, gt=0.0, lt=1.0)
    """reduce_on_plateau: multiply the learning rate by this after `patience` epochs without improvement"""
    patience: int = Field(10, ge=0)
    """reduce_on_plateau: epochs without a better validation loss before the learning rate falls"""
    min_lr: float = Field(1e-6, ge=0.0)
    """the smallest learning rate"""


#: which parameters a fine-tuning stage keeps fixed: "backbone" (all but the SSF/adapter modules, the
#: readouts and the extra heads), "none", or a list of parameter-name prefixes (``core.layers.0``, ``core.embedding``)
FreezeSpec = Literal["backbone", "none"] | list[str]


class StageConfig(BaseModel):
    """One fine-tuning stage (PhysicsML's ``stages`` entries; ``max_epochs``/``freeze_modules`` also accepted)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    epochs: int = Field(gt=0, validation_alias=AliasChoices("epochs", "max_epochs"))
    """epochs of this stage"""
    freeze: FreezeSpec = Field("backbone", validation_alias=AliasChoices("freeze", "freeze_modules"))
    """`backbone` (all but the SSF/adapter modules, readouts and extra heads), `none`, or parameter-name prefixes"""
    lr: float | None = Field(None, gt=0.0)
    """learning rate of this stage (default: `optimizer.lr`)"""


class FineTuneConfig(BaseModel):
    """Start from a pre-trained checkpoint (PhysicsML's ``transfer_learning``; its key names also accepted).

    The model is built from the checkpoint's options, updated by the model
    section's (so a variant needs only ``name``); every weight of the
    checkpoint with the same name loads, ``modules_to_match`` renames
    prefixes first (new name -> name in the checkpoint).
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    checkpoint: Path = Field(validation_alias=AliasChoices("checkpoint", "pre_trained_model_path"))
    """the pre-trained mlipkit checkpoint (relative to the config file)"""
    modules_to_match: dict[str, str] = Field(default_factory=dict)
    """renames applied first: parameter-name prefix in this model -> prefix in the checkpoint"""
    freeze: FreezeSpec = "backbone"
    """`backbone` (all but the SSF/adapter modules, readouts and extra heads), `none`, or parameter-name prefixes"""
    stages: list[StageConfig] = Field(default_factory=list)
    """stages run in order, each with its own epochs, freezing and learning rate; none: one stage of max_epochs"""


#: PhysicsML's loss names (torch.nn classes) -> mlipkit's, and the torch option each reads from ``config``
PHYSICSML_LOSSES = {"MSELoss": ("mse", None), "L1Loss": ("l1", None), "HuberLoss": ("huber", "delta"), "GaussianNLLLoss": ("gaussian_nll", "eps")}
LOSS_OPTION_FIELDS = {"delta": "huber_delta", "eps": "gaussian_nll_eps"}


def physicsml_loss(spec: Any, key: str) -> dict[str, Any]:
    """A PhysicsML loss config ``{name: MSELoss, weight: 1.0, config: {...}}`` as mlipkit's loss fields."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"model.{key}: a loss config is a mapping with a 'name' (e.g. {{name: MSELoss, weight: 1.0}})")
    spec = dict(spec)
    name = spec.pop("name")
    if name not in PHYSICSML_LOSSES and name not in LossConfig.model_fields["name"].annotation.__args__:
        raise ValueError(f"model.{key}: unknown loss '{name}'; known: {sorted(PHYSICSML_LOSSES)}")
    name, option = PHYSICSML_LOSSES.get(name, (name, None))
    loss: dict[str, Any] = {"name": name}
    if "weight" in spec:
        loss["weight"] = spec.pop("weight")
    for torch_option, value in (spec.pop("config", None) or {}).items():
        if torch_option != option:
            raise ValueError(f"model.{key}: option '{torch_option}' of loss '{name}' is not supported (only {option or 'none'})")
        loss[LOSS_OPTION_FIELDS[torch_option]] = value
    if spec:
        raise ValueError(f"model.{key}: unknown loss config keys {sorted(spec)} (name, weight, config)")
    return loss


def translate_physicsml_losses(values: dict[str, Any]) -> dict[str, Any]:
    """PhysicsML's flat ``y_*_loss_config`` model keys as mlipkit's loss section and head options.

    In PhysicsML the graph scalars are the energy, and the node vectors are the
    forces when the model computes forces (otherwise a node-vector head).
    """
    model = values.get("model")
    if not isinstance(model, dict) or not any(key.endswith("_loss_config") for key in model):
        return values
    model = dict(model)
    forces = model.get("compute_forces", model.get("do_derivatives", True))
    explicit = dict(values.get("loss") or {})
    losses: dict[str, Any] = {}
    for key in [key for key in model if key.endswith("_loss_config")]:
        spec = model.pop(key)
        if spec is None:
            continue
        output = key.removesuffix("_loss_config")
        loss = physicsml_loss(spec, key)
        if output == "y_graph_scalars" or (output == "y_node_vector" and forces):
            fitted = "energy" if output == "y_graph_scalars" else "forces"
            if fitted == "energy" and _outputs_energy_uncertainty(model.get("name")):
                raise ValueError(
                    f"model.{key}: model '{model.get('name')}' fits its energy with gaussian_nll, as PhysicsML's "
                    "mean_var models do; leave the key out"
                )
            if fitted in explicit:
                raise ValueError(f"model.{key} and loss.{fitted} are two spellings of one loss; give one")
            losses[fitted] = loss
        elif output in ("y_node_scalars", "y_node_vector", "y_graph_vector"):
            head = dict(model.get(output) or {})
            head["loss"] = loss
            model[output] = head
        else:
            raise ValueError(f"model.{key}: mlipkit's NequIP and MACE have no {output} output")
    values = dict(values, model=model)
    if losses and _outputs_energy_uncertainty(model.get("name")) and "energy" not in explicit:
        losses["energy"] = {"name": "gaussian_nll"}
    if losses:
        values["loss"] = {**explicit, **losses}
    return values


def _outputs_energy_uncertainty(name: Any) -> bool:
    try:
        return model_entry(str(name)).energy_uncertainty
    except ValueError:
        return False


class TrainConfig(BaseModel):
    """A whole ``mlip-train`` config."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _physicsml_losses(cls, values: Any) -> Any:
        return translate_physicsml_losses(values) if isinstance(values, dict) else values

    data: DataConfig
    """files, splits, batches and label names"""
    model: ModelSection
    """`name` of a registered model and its options; any value may be `${training_data_stats:NAME}`"""
    loss: dict[str, LossConfig] = Field(default_factory=lambda: {"energy": LossConfig(weight=1.0), "forces": LossConfig(weight=10.0)})
    """output name (energy, forces, stress, heads, charges) -> loss; energy is compared per atom. Left out: energy 1,
    forces 10, and stress 10 when every structure is periodic and has a stress label"""
    optimizer: OptimizerConfig = OptimizerConfig()
    """the optimizer"""
    scheduler: SchedulerConfig = SchedulerConfig()
    """the learning-rate schedule"""
    ema_decay: float | None = Field(0.99, gt=0.0, lt=1.0)
    """decay of the moving average of the weights that are validated and saved (warmed up as torch_ema); null: none"""
    max_epochs: int = Field(100, gt=0)
    """epochs to train (with fine-tuning stages: their sum)"""
    early_stopping_patience: int | None = Field(None, gt=0)
    """stop after this many epochs without a better validation loss; null: never"""
    gradient_clip: float | None = Field(None, gt=0.0, validation_alias=AliasChoices("gradient_clip", "clip_grad"))
    """largest gradient norm; null: no clipping"""
    seed: int = 0
    """seed of the model's initial weights and the batch order"""
    device: str = "cpu"
    """torch device to train on"""
    dtype: Literal["float32", "float64"] = "float32"
    """`float32` or `float64`"""
    output_dir: Path = Path("runs/mlip")
    """run directory: best.ckpt, last.ckpt, metrics.csv, plots, config.yaml (relative to the working directory)"""
    fine_tune: FineTuneConfig | None = Field(None, validation_alias=AliasChoices("fine_tune", "transfer_learning"))
    """start from a pre-trained checkpoint (see Variants and fine-tuning)"""

    @model_validator(mode="after")
    def _stages(self) -> "TrainConfig":
        if self.fine_tune is not None and self.fine_tune.stages:
            total = sum(stage.epochs for stage in self.fine_tune.stages)
            if "max_epochs" in self.model_fields_set and self.max_epochs != total:
                raise ValueError(f"max_epochs={self.max_epochs} but the fine_tune stages add up to {total} epochs; give one")
            self.max_epochs = total
        return self

    @model_validator(mode="after")
    def _device(self) -> "TrainConfig":
        import torch

        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device: '{self.device}' is not a device (cpu, cuda, cuda:1, ...)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: '{self.device}' needs a CUDA build of PyTorch and a GPU; this machine has neither")
        return self

    @model_validator(mode="after")
    def _losses(self) -> "TrainConfig":
        unknown = sorted(set(self.loss) - set(LOSS_OUTPUTS))
        if unknown:
            raise ValueError(f"loss: unknown output(s) {unknown}; outputs that can be fitted: {list(LOSS_OUTPUTS)}")
        if not self.loss:
            raise ValueError("loss: give at least one output to fit (energy, forces, stress)")
        for output, option in HEAD_OPTIONS.items():
            head = getattr(self.model, option, None)
            if output in self.loss and head is None:
                raise ValueError(f"loss.{output}: the model has no {option} head to fit")
        charges = getattr(self.model, "predict_partial_charges", False) or getattr(self.model, "use_coulomb_term", False)
        for output in CHARGE_OUTPUTS:
            if output in self.loss and not charges:
                raise ValueError(f"loss.{output}: the model predicts no charges; set model.predict_partial_charges (or use_coulomb_term)")
        try:
            with_variance = model_entry(self.model.name).energy_uncertainty
        except ValueError as error:
            raise ValueError(f"model.name: {error}") from None
        for output, loss in self.loss.items():
            if loss.name == "gaussian_nll" and not (output == "energy" and with_variance):
                raise ValueError(
                    f"loss.{output}: gaussian_nll needs a predicted variance of that output; only the energy of "
                    f"mean-variance models (mean_var_nequip, mean_var_mace) has one, and model '{self.model.name}' "
                    f"{'is one' if with_variance else 'is not'}"
                )
        if with_variance:
            energy = self.loss.get("energy")
            if "loss" not in self.model_fields_set and energy is not None:
                self.loss["energy"] = energy.model_copy(update={"name": "gaussian_nll"})
            elif energy is None or energy.name != "gaussian_nll":
                raise ValueError(
                    f"loss.energy: model '{self.model.name}' learns its std only through a gaussian_nll energy loss; "
                    "give loss.energy.name: gaussian_nll (or leave the loss section out)"
                )
        return self


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        value = f" (got {item['input']!r})" if "input" in item and not isinstance(item["input"], dict) else ""
        lines.append(f"  {location}: {item['msg']}{value}")
    return f"{source}: invalid training config\n" + "\n".join(lines)


def parse_config(values: dict[str, Any], source: str = "<config>") -> TrainConfig:
    """Validate a config given as a mapping (``source`` names it in errors); relative paths stay as given."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config; relative data and checkpoint paths are taken relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a training config is a mapping of sections (data, model, loss, ...)")
    sections_and_paths = (("data", ("train", "validation", "test")), ("fine_tune", ("checkpoint",)), ("transfer_learning", ("pre_trained_model_path",)))
    for section, keys in sections_and_paths:
        section_values = values.get(section)
        if isinstance(section_values, dict):
            for key in keys:
                if isinstance(section_values.get(key), str) and not Path(section_values[key]).is_absolute():
                    section_values[key] = str((path.parent / section_values[key]).resolve())
    return parse_config(values, str(path))


def statistic_values(statistics: DatasetStatistics, type_names: list[str]) -> dict[str, Any]:
    """Every name a ``${training_data_stats:NAME}`` reference may use, with its value (None: not in the data)."""
    per_type_forces = statistics.per_type_forces_rms
    return {
        "num_neighbors_mean": statistics.num_neighbors_mean,
        "avg_r_min": statistics.avg_r_min,
        "per_atom_energy_mean": statistics.per_atom_energy_mean,
        "per_atom_energy_std": statistics.per_atom_energy_std,
        "total_energy_std": statistics.total_energy_std,
        "forces_rms": statistics.forces_rms,
        "per_type_forces_rms": (
            {name: value for name, value in zip(type_names, per_type_forces)} if per_type_forces else None
        ),
        "isolated_atom_energies": dict(statistics.isolated_atom_energies) or None,
        "least_squares_atomic_energies": statistics.least_squares_atomic_energies,
    }


def resolve_statistics(options: Any, values: dict[str, Any], where: str = "model") -> Any:
    """``options`` with every statistics reference replaced by its value."""
    if isinstance(options, dict):
        return {key: resolve_statistics(value, values, f"{where}.{key}") for key, value in options.items()}
    if isinstance(options, list):
        return [resolve_statistics(value, values, f"{where}[{i}]") for i, value in enumerate(options)]
    if isinstance(options, str) and options.startswith("${"):
        match = STATISTIC_REFERENCE.match(options)
        if match is None:
            raise ConfigError(f"{where}: '{options}' is not a statistics reference; write ${{training_data_stats:NAME}}")
        name = match.group(1)
        if name not in values:
            raise ConfigError(f"{where}: unknown statistic '{name}'; known statistics: {sorted(values)}")
        value = values[name]
        if value is None:
            raise ConfigError(f"{where}: the training data does not define '{name}' (no labels it needs, e.g. forces)")
        if isinstance(value, dict) and any(v is None for v in value.values()):
            missing = sorted(k for k, v in value.items() if v is None)
            raise ConfigError(f"{where}: '{name}' is undefined for {missing} (no such atoms with that label)")
        return value
    return options
