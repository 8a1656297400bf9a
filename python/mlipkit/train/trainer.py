"""The training loop: data, statistics, model, optimiser, EMA, checkpoints, metrics and plots.

Any registered model trains here unchanged: the trainer only builds it from
the registry and reads the outputs named in ``keys``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import yaml
from ase.data import atomic_numbers
from tqdm.auto import tqdm

from mlipkit.data import keys
from mlipkit.data.extxyz import Configuration, read_extxyz
from mlipkit.data.graph import AtomicGraph, batch_graphs, graph_from_configuration
from mlipkit.data.statistics import DatasetStatistics, compute_statistics
from mlipkit.models.checkpoint import load_checkpoint, model_dtype, read_checkpoint, save_checkpoint
from mlipkit.models.potential import Potential
from mlipkit.models.registry import build_from_config, build_model, model_entry
from mlipkit.train.config import HEAD_OPTIONS, ConfigError, FreezeSpec, OptimizerConfig, TrainConfig, resolve_statistics, statistic_values
from mlipkit.train.fine_tune import frozen_parameter_names, load_pretrained
from mlipkit.models.config import LossConfig
from mlipkit.train.losses import CHARGE_OUTPUTS, TARGET_FIELDS, ErrorAccumulator, label_count, total_loss
from mlipkit.train.plots import learning_curve, parity_plots

#: stress loss weight of the default loss when the data has stress: the stress is what tells the model how the
#: energy changes with volume (forces do not), and with it the equation of state (docs/training.md#training-defaults)
DEFAULT_STRESS_WEIGHT = 10.0
#: graph fields a training batch carries besides the labels
INPUT_FIELDS = (keys.POSITIONS, keys.ATOM_TYPES, keys.EDGE_INDEX, keys.EDGE_CELL_SHIFTS, keys.CELL, keys.PBC, keys.BATCH, keys.NUM_ATOMS)


@dataclass
class Datasets:
    train: list[Configuration]
    validation: list[Configuration]
    test: list[Configuration]
    isolated_atoms: list[Configuration]


@dataclass
class TrainResult:
    """What a run leaves: its directory, the best checkpoint, and the held-out errors and plots of the best model."""

    output_dir: Path
    best_checkpoint: Path
    epochs: int
    best_validation_loss: float
    test_metrics: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


def load_datasets(config: TrainConfig) -> Datasets:
    """Read the files; without validation/test files, hold out fractions of the training file (seeded)."""
    data = config.data
    label_keys = ("energy_key", "forces_key", "stress_key", "charges_key", "total_charge_key", "dipole_key")
    read = lambda path: read_extxyz(path, **{key: getattr(data, key) for key in label_keys})  # noqa: E731
    frames = read(data.train)
    isolated = [c for c in frames if c.is_isolated_atom]
    frames = [c for c in frames if not c.is_isolated_atom]
    order = np.random.default_rng(data.shuffle_seed).permutation(len(frames))
    num_validation = 0 if data.validation else int(round(data.validation_fraction * len(frames)))
    num_test = 0 if data.test else int(round(data.test_fraction * len(frames)))
    validation = [frames[i] for i in order[:num_validation]] if num_validation else []
    test = [frames[i] for i in order[num_validation : num_validation + num_test]] if num_test else []
    train = [frames[i] for i in order[num_validation + num_test :]]
    if data.validation:
        validation = [c for c in read(data.validation) if not c.is_isolated_atom]
    if data.test:
        test = [c for c in read(data.test) if not c.is_isolated_atom]
    if not train or not validation:
        raise ConfigError(f"data: {len(train)} training and {len(validation)} validation structures; both must be non-empty")
    return Datasets(train, validation, test, isolated)


def infer_type_names(configurations: list[Configuration]) -> list[str]:
    return sorted({s for c in configurations for s in c.symbols}, key=lambda symbol: atomic_numbers[symbol])


def training_graphs(configurations: list[Configuration], model: Potential, outputs: list[str], dtype: torch.dtype, name: str) -> list[AtomicGraph]:
    """Graphs with the input fields and the labels the losses need; a structure without one is an error.

    Models with charges read each structure's total charge (neutral without a label) and, with a Coulomb term,
    the long-range edge list.
    """
    fields = INPUT_FIELDS + model.graph_input_fields + tuple(TARGET_FIELDS[output] for output in outputs)
    graphs = []
    for index, configuration in enumerate(configurations):
        graph = graph_from_configuration(configuration, model.r_max, model.type_names, dtype, model.long_range_inputs)
        if keys.TOTAL_CHARGE in model.graph_input_fields and "total_charge" not in outputs:
            graph.setdefault(keys.TOTAL_CHARGE, torch.zeros(1, dtype=dtype))
        missing = [field for field in fields if field not in graph]
        if missing:
            raise ConfigError(
                f"{name} structure {index} ({configuration.source}) has no {missing}; the loss fits {outputs}: "
                "drop that loss or label every structure"
            )
        graphs.append({field: graph[field] for field in fields})
    return graphs


def batch_indices(num_graphs: int, batch_size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    order = torch.randperm(num_graphs, generator=generator).tolist() if generator is not None else list(range(num_graphs))
    return [order[start : start + batch_size] for start in range(0, num_graphs, batch_size)]


def batches(graphs: list[AtomicGraph], batch_size: int, generator: torch.Generator | None = None):
    for indices in batch_indices(len(graphs), batch_size, generator):
        yield batch_graphs([graphs[i] for i in indices])


def distributed_setup() -> tuple[int, int]:
    """Rank and world size; under torchrun (WORLD_SIZE > 1) joins the gloo process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return (dist.get_rank(), world_size) if world_size > 1 else (0, 1)


@dataclass(frozen=True)
class Stage:
    epochs: int
    freeze: FreezeSpec
    lr: float


def training_stages(config: TrainConfig) -> list[Stage]:
    """The fine-tuning stages, or one stage of max_epochs training everything."""
    fine_tune, lr = config.fine_tune, config.optimizer.lr
    if fine_tune is None:
        return [Stage(config.max_epochs, "none", lr)]
    if not fine_tune.stages:
        return [Stage(config.max_epochs, fine_tune.freeze, lr)]
    return [Stage(stage.epochs, stage.freeze, stage.lr or lr) for stage in fine_tune.stages]


class WeightAverage:
    """Exponential moving average of a model's weights, held in a second model built from the same config.

    The decay warms up as torch_ema's (mace-torch, nequip): update n uses
    min(decay, (1 + n) / (10 + n)), so the average forgets the random initial
    weights within tens of steps instead of after 1 / (1 - decay) of them.
    (A deep copy is not used: copying e3nn's compiled modules adds buffers,
    so the copy's state would not line up with the model's.)
    """

    def __init__(self, model: Potential, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.module = build_from_config(model.model_name, model.config, model_dtype(model)).to(next(model.parameters()).device)
        self.module.load_state_dict(model.state_dict())

    @torch.no_grad()
    def update(self, model: Potential) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        current = model.state_dict()
        for name, averaged in self.module.state_dict().items():
            if averaged.is_floating_point():
                averaged.lerp_(current[name], 1.0 - decay)
            else:
                averaged.copy_(current[name])

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.num_updates = state["num_updates"]


def build_optimizer(parameters: list[torch.nn.Parameter], config: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    optimizer_class = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=lr, weight_decay=config.weight_decay, amsgrad=config.amsgrad)


def optimisation_step(
    network: torch.nn.Module,
    batch: AtomicGraph,
    losses: dict[str, LossConfig],
    optimizer: torch.optim.Optimizer,
    ema: WeightAverage | None = None,
    gradient_clip: float | None = None,
    counts: dict[str, int] | None = None,
    loss_factor: float = 1.0,
) -> tuple[dict, torch.Tensor]:
    """One step of mlip-train: loss, gradients of ``loss_factor`` x loss, clipping, the optimiser's update, the EMA.

    (``network`` may be the DDP wrapper of the model the EMA follows; ``counts`` and ``loss_factor`` make the
    ranks' shares of a batch add up to the one-process gradient.)
    """
    model = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
    optimizer.zero_grad(set_to_none=True)
    predictions = network(batch)
    loss, _ = total_loss(predictions, batch, losses, counts)
    (loss_factor * loss).backward()
    if gradient_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clip)
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return predictions, loss


class Trainer:
    """``mlip-train`` in Python: ``Trainer(load_config("config.yaml")).run()``.

    ``log`` receives the lines mlip-train prints; ``progress`` shows a bar per epoch.
    """

    def __init__(self, config: TrainConfig, log: Callable[[str], None] = print, progress: bool = True):
        self.config = config
        self.log = log
        self.progress = progress
        self.dtype = getattr(torch, config.dtype)
        self.device = torch.device(config.device)
        self.output_dir = Path(config.output_dir)
        self.rank, self.world_size = distributed_setup()
        if self.rank != 0:
            self.log = lambda message: None
            self.progress = False

    # -- set-up -------------------------------------------------------------------------------

    def build(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        self.datasets = load_datasets(config)
        everything = self.datasets.train + self.datasets.isolated_atoms
        type_names = infer_type_names(everything) if config.data.type_names == "infer" else list(config.data.type_names)
        options = config.model.model_dump(exclude={"name"})
        if "type_names" in options:
            raise ConfigError("model.type_names: give type names once, under data.type_names")
        pretrained = None
        if config.fine_tune is not None:
            pretrained = read_checkpoint(config.fine_tune.checkpoint)
            type_names = self._pretrained_type_names(pretrained, type_names, everything)
            config_class = model_entry(config.model.name).config_class
            options = config_class.canonical_options(options)
            given_options = set(options)
            inherited = {k: v for k, v in pretrained["config"].items() if k in config_class.model_fields and k not in ("type_names", "seed")}
            options = {**inherited, **options}
        if "r_max" not in options:
            r_max = model_entry(config.model.name).config_class.default_r_max(options)
            if r_max is None:
                raise ConfigError("model.r_max: the cutoff radius is required")
            options["r_max"] = r_max
        self.statistics: DatasetStatistics = compute_statistics(everything, float(options["r_max"]), type_names, progress=self.progress)
        options = resolve_statistics(options, statistic_values(self.statistics, type_names))
        options.setdefault("seed", config.seed)
        if options.get("use_total_charge_embedding") in (True, "categorical") and not options.get("available_total_charges"):
            options["available_total_charges"] = self._seen_total_charges()
        try:
            self.model = build_model(config.model.name, dtype=self.dtype, type_names=type_names, **options).to(self.device)
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None
        self.resolved_model_options = options
        if pretrained is not None:
            self._load_pretrained(pretrained, given_options)
        # the model's extra heads are fitted with their own loss settings unless the config's loss names them
        self.losses = dict(config.loss)
        if "loss" not in config.model_fields_set and self._stress_labelled():
            self.losses["stress"] = LossConfig(weight=DEFAULT_STRESS_WEIGHT)
            self.log(f"every structure has a stress label: the default loss fits stress too (weight {DEFAULT_STRESS_WEIGHT:g})")
        for output, option in HEAD_OPTIONS.items():
            head = getattr(self.model.config, option)
            if head is not None and output not in self.losses:
                self.losses[output] = head.loss
        # charge outputs the data labels are reported (weight 0: not fitted) unless the loss section fits them
        everything_labelled = self.datasets.train + self.datasets.validation + self.datasets.test
        periodic = any(c.pbc.any() for c in everything_labelled)
        if self.model.partial_charges is not None:
            for output in CHARGE_OUTPUTS:
                labelled = all(getattr(c, output) is not None for c in everything_labelled)
                if output not in self.losses and labelled and not (output == "dipole" and periodic):
                    self.losses[output] = LossConfig(weight=0.0)
        if "dipole" in self.losses and periodic:
            raise ConfigError(
                "loss.dipole: the data holds periodic structures, whose dipole is not defined (the model gives NaN); "
                "fit the dipole on structures periodic in no direction only"
            )
        self.outputs = list(self.losses)
        self.graphs = {
            name: [
                {k: v.to(self.device) for k, v in graph.items()}
                for graph in training_graphs(getattr(self.datasets, name), self.model, self.outputs, self.dtype, name)
            ]
            for name in ("train", "validation", "test")
        }
        self.ema = WeightAverage(self.model, config.ema_decay) if config.ema_decay is not None else None
        self.stages = training_stages(config)
        self.stage_index = -1
        self.epoch = 0
        self.best_validation_loss = math.inf
        self.epochs_without_improvement = 0
        self.enter_stage(0)

    def _stress_labelled(self) -> bool:
        """Every structure periodic with a stress label, and a model that differentiates its energy (stress)."""
        everything = self.datasets.train + self.datasets.validation + self.datasets.test
        return self.model.do_derivatives and all(c.stress is not None and c.pbc.all() for c in everything)

    def _seen_total_charges(self) -> list[float]:
        """The categorical total-charge embedding's classes: the training data's total charges (unlabelled: 0)."""
        charge_of = lambda configuration: configuration.total_charge or 0.0  # noqa: E731
        seen = sorted({charge_of(c) for c in self.datasets.train})
        for name in ("validation", "test"):
            unseen = sorted({charge_of(c) for c in getattr(self.datasets, name)} - set(seen))
            if unseen:
                raise ConfigError(
                    f"data: {name} structures have total charges {unseen} that no training structure has; the categorical "
                    f"total-charge embedding learns only the training data's {seen}"
                )
        self.log(f"total charges in the training data (categorical embedding): {seen}")
        return seen

    def _load_pretrained(self, pretrained: dict, given_options: set[str]) -> None:
        """The checkpoint's weights, except per-type energy shifts/scales that the model section gives anew."""
        energy_options = {"per_type_energy_shifts": "scale_shift.shifts", "per_type_energy_scales": "scale_shift.scales"}
        keep = {name for option, name in energy_options.items() if option in given_options}
        fine_tune = self.config.fine_tune
        new = load_pretrained(self.model, pretrained, fine_tune.modules_to_match, fine_tune.checkpoint, keep)
        new_modules = sorted({".".join(name.split(".")[:2]) for name in new})
        self.log(f"fine-tuning from {fine_tune.checkpoint} ({pretrained['model_name']}): "
                 f"{len(self.model.state_dict()) - len(new)} weights loaded, new: {new_modules or 'none'}")

    def _pretrained_type_names(self, pretrained: dict, type_names: list[str], configurations: list[Configuration]) -> list[str]:
        """A fine-tuned model keeps the pre-trained type names; the data may use any of them."""
        names = list(pretrained["type_names"])
        source = self.config.fine_tune.checkpoint
        if self.config.data.type_names != "infer" and list(self.config.data.type_names) != names:
            raise ConfigError(f"data.type_names: {list(self.config.data.type_names)}, but {source} was trained with {names}")
        unknown = sorted({s for c in configurations for s in c.symbols} - set(names), key=lambda symbol: atomic_numbers[symbol])
        if unknown:
            raise ConfigError(f"data: elements {unknown} are not among the pre-trained model's types {names} ({source})")
        return names

    def stage_at(self, epoch: int) -> int:
        """The stage the epoch after ``epoch`` finished epochs belongs to."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return index
        return len(self.stages) - 1

    def enter_stage(self, index: int) -> None:
        """Freeze what the stage freezes; a new optimiser (and scheduler) over the rest at the stage's learning rate."""
        config, stage = self.config, self.stages[index]
        frozen = frozen_parameter_names(self.model, stage.freeze)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name not in frozen)
        trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        if not trainable:
            raise ConfigError(f"fine_tune stage {index + 1}: freezing {stage.freeze!r} leaves no parameter to train")
        self.optimizer = build_optimizer(trainable, config.optimizer, stage.lr)
        scheduler = config.scheduler
        if scheduler.name == "reduce_on_plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=scheduler.factor, patience=scheduler.patience, min_lr=scheduler.min_lr
            )
        elif scheduler.name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=stage.epochs, eta_min=scheduler.min_lr)
        else:
            self.scheduler = None
        # several processes: each takes a share of every batch, DDP sums the gradients of the trainable parameters
        self.network = torch.nn.parallel.DistributedDataParallel(self.model) if self.world_size > 1 else self.model
        self.stage_index = index
        self.epochs_without_improvement = 0
        if len(self.stages) > 1 or frozen:
            self.log(f"stage {index + 1}/{len(self.stages)}: {stage.epochs} epochs, lr {stage.lr:g}, "
                     f"{sum(p.numel() for p in trainable):,} trainable parameters, {len(frozen)} tensors frozen")

    def evaluation_model(self) -> Potential:
        """The weights validation uses and checkpoints hold: the EMA if configured."""
        return self.ema.module if self.ema is not None else self.model

    # -- checkpoints --------------------------------------------------------------------------

    def _extra(self, with_state: bool) -> dict:
        extra = {
            "train_config": self.config.model_dump(mode="json"),
            "resolved_model_options": self.resolved_model_options,
            "statistics": self.statistics.model_dump(mode="json"),
            "epoch": self.epoch,
            "best_validation_loss": self.best_validation_loss,
        }
        if with_state:
            extra["training_state"] = {
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "epochs_without_improvement": self.epochs_without_improvement,
                "stage": self.stage_index,
                "torch_rng": torch.get_rng_state(),
            }
        return extra

    def save(self, name: str, with_state: bool) -> Path | None:
        if self.rank != 0:
            return None
        return save_checkpoint(self.evaluation_model(), self.output_dir / name, self._extra(with_state))

    def restore(self, path: Path) -> None:
        """Continue from ``last.ckpt``: weights, EMA, optimiser, scheduler, counters and RNG."""
        extra = read_checkpoint(path)["extra"]
        if "training_state" not in extra:
            raise ConfigError(f"{path} holds no training state (only last.ckpt can be resumed)")
        state = extra["training_state"]
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = extra["epoch"]
        self.best_validation_loss = extra["best_validation_loss"]
        # a resume at a stage boundary starts the next stage afresh; inside a stage, its optimiser continues
        self.enter_stage(self.stage_at(self.epoch))
        if state.get("stage", 0) == self.stage_index:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.epochs_without_improvement = state["epochs_without_improvement"]
        torch.set_rng_state(state["torch_rng"])

    # -- the loop -----------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        errors = ErrorAccumulator()
        loss_sum, num_batches = 0.0, 0
        generator = torch.Generator().manual_seed(self.config.data.shuffle_seed * 100003 + self.epoch)
        graphs = self.graphs["train"]
        batch_list = batch_indices(len(graphs), self.config.data.batch_size, generator)
        bar = tqdm(batch_list, desc=f"epoch {self.epoch}", leave=False, disable=not self.progress)
        for indices in bar:
            counts = {output: sum(label_count(output, graphs[i]) for i in indices) for output in self.outputs}
            share = indices[self.rank :: self.world_size]
            # a rank without a share of a small last batch still joins the gradient sum, with weight 0
            weight = 1.0 if share else 0.0
            batch = batch_graphs([graphs[i] for i in share or indices[:1]])
            # DDP averages gradients over ranks; the shares sum to the whole batch's loss
            predictions, loss = optimisation_step(
                self.network, batch, self.losses, self.optimizer, self.ema, self.config.gradient_clip, counts,
                weight * self.world_size,
            )
            if share:
                errors.add(predictions, batch, self.outputs)
            loss_sum += weight * float(loss.detach())
            num_batches += 1
            bar.set_postfix(loss=f"{loss_sum / num_batches:.4g}")
        if self.world_size > 1:
            errors.all_reduce()
            summed = torch.tensor([loss_sum], dtype=torch.float64)
            dist.all_reduce(summed)
            loss_sum = float(summed[0])
        return {"train_loss": loss_sum / num_batches, **errors.metrics("train")}

    def evaluate(self, name: str, model: Potential | None = None) -> dict[str, float]:
        """Loss and errors of ``model`` (default: the evaluation weights) on a dataset."""
        model = model or self.evaluation_model()
        model.eval()
        errors = ErrorAccumulator()
        loss_sum, weight_sum = 0.0, 0
        for batch in batches(self.graphs[name], self.config.data.validation_batch_size):
            predictions = model(batch)
            loss, _ = total_loss(predictions, batch, self.losses)
            size = int(batch[keys.NUM_ATOMS].shape[0])
            loss_sum += float(loss.detach()) * size
            weight_sum += size
            errors.add(predictions, batch, self.outputs)
        return {f"{name}_loss": loss_sum / max(weight_sum, 1), **errors.metrics(name)}

    #: batches GemNet-OC's scale factors are fitted on (fairchem's default)
    SCALE_FACTOR_BATCHES = 16

    def prepare_scale_factors(self) -> None:
        """Models with fitted scale factors (GemNet-OC) load them from the model's scale_file or fit them on
        training batches before the first epoch; a pre-trained checkpoint brings its own."""
        core = self.model.core
        if not hasattr(core, "fit_scale_factors") or self.config.fine_tune is not None:
            return
        scale_file = self.model.config.scale_file
        if scale_file is not None:
            try:
                core.load_scale_factors(scale_file)
            except (OSError, ValueError) as error:
                raise ConfigError(f"model.scale_file: {error}") from None
            self.log(f"scale factors loaded from {scale_file}")
            return
        size = self.config.data.batch_size
        graphs = [batch_graphs(self.graphs["train"][i : i + size]) for i in range(0, len(self.graphs["train"]), size)]
        graphs = graphs[: self.SCALE_FACTOR_BATCHES]
        values = core.fit_scale_factors(graphs)
        listed = ", ".join(f"{name} {value:.4f}" for name, value in values.items())
        self.log(f"scale factors fitted on {sum(int(g[keys.NUM_ATOMS].numel()) for g in graphs)} structures: {listed}")

    def run(self, resume: bool = False) -> TrainResult:
        """Train (from ``output_dir/last.ckpt`` when ``resume``), then evaluate the best model on the held-out set."""
        self.build()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        last = self.output_dir / "last.ckpt"
        metrics_path = self.output_dir / "metrics.csv"
        if resume:
            self.restore(last)
            self.log(f"resumed from {last} after epoch {self.epoch}")
        elif metrics_path.exists() and self.rank == 0:
            metrics_path.unlink()
        if self.rank == 0:
            (self.output_dir / "config.yaml").write_text(
                yaml.safe_dump({**self.config.model_dump(mode="json"), "resolved_model_options": self.resolved_model_options}, sort_keys=False)
            )
        if not resume:
            self.prepare_scale_factors()
        counts = {name: len(graphs) for name, graphs in self.graphs.items()}
        self.log(f"data: {counts['train']} training, {counts['validation']} validation, {counts['test']} test structures; "
                 f"types {self.model.type_names}; {sum(p.numel() for p in self.model.parameters()):,} parameters")
        started = time.perf_counter()
        while self.epoch < self.config.max_epochs:
            if self.stage_at(self.epoch) != self.stage_index:
                self.enter_stage(self.stage_at(self.epoch))
            self.epoch += 1
            epoch_start = time.perf_counter()
            row = {"epoch": self.epoch, **self.train_epoch(), **self.evaluate("validation")}
            validation_loss = row["validation_loss"]
            if self.scheduler is not None:
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(validation_loss)
                else:
                    self.scheduler.step()
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["time_s"] = time.perf_counter() - epoch_start
            improved = validation_loss < self.best_validation_loss
            if improved:
                self.best_validation_loss = validation_loss
                self.epochs_without_improvement = 0
            else:
                self.epochs_without_improvement += 1
            if improved:
                self.save("best.ckpt", with_state=False)
            self.save("last.ckpt", with_state=True)
            if self.rank == 0:
                self._append_metrics(metrics_path, row)
            self.log(self._summary(row) + ("  *" if improved else ""))
            patience = self.config.early_stopping_patience
            if patience is not None and self.epochs_without_improvement >= patience:
                self.log(f"early stopping: no better validation loss for {patience} epochs")
                break
        self.log(f"trained {self.epoch} epochs in {time.perf_counter() - started:.1f} s")
        return self.finish(metrics_path)

    def finish(self, metrics_path: Path) -> TrainResult:
        best = self.output_dir / "best.ckpt"
        result = TrainResult(self.output_dir, best, self.epoch, self.best_validation_loss)
        if self.world_size > 1:
            dist.barrier()
            if self.rank != 0:
                return result
        best_model = load_checkpoint(best, self.dtype).to(self.device)
        held_out = "test" if self.graphs["test"] else "validation"
        result.test_metrics = self.evaluate(held_out, best_model)
        self.log(f"best model on the {held_out} set: " + self._summary(result.test_metrics))
        result.plots.append(learning_curve(metrics_path, self.output_dir / "learning_curve.png"))
        result.plots += parity_plots(best_model, self.graphs[held_out], self.outputs, self.config.data.validation_batch_size, self.output_dir, held_out)
        for plot in result.plots:
            self.log(f"wrote {plot}")
        return result

    @staticmethod
    def _append_metrics(path: Path, row: dict) -> None:
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    @staticmethod
    def _summary(row: dict) -> str:
        parts = [f"epoch {row['epoch']:3d}"] if "epoch" in row else []
        for key, value in row.items():
            if key.endswith("_loss"):
                parts.append(f"{key} {value:.4g}")
            elif key.endswith("energy_mae"):
                parts.append(f"{key.removesuffix('_mae')} MAE {1000 * value:.2f} meV/atom")
            elif key.endswith("forces_mae"):
                parts.append(f"{key.removesuffix('_mae')} MAE {1000 * value:.1f} meV/Å")
            elif key.endswith("stress_mae"):
                parts.append(f"{key.removesuffix('_mae')} MAE {1000 * value:.2f} meV/Å³")
            elif key.endswith("charges_mae"):
                parts.append(f"{key.removesuffix('_mae')} MAE {1000 * value:.1f} me")
            elif key.endswith("energy_nll"):
                parts.append(f"{key.removesuffix('_nll')} NLL {value:.3f}")
            elif key.endswith("energy_within_1sigma"):
                parts.append(f"within 1σ {100 * value:.0f}%")
        if "lr" in row:
            parts.append(f"lr {row['lr']:.2g}")
        return ", ".join(parts)
