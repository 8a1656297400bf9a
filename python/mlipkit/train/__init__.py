"""Training from extended-XYZ data: config, statistics, losses, the loop, plots."""

from mlipkit.train.config import ConfigError, TrainConfig, load_config, parse_config
from mlipkit.train.trainer import Trainer, TrainResult

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "Trainer", "load_config", "parse_config"]
