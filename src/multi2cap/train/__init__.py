"""Training of Multi2Cap: recipes (`TrainConfig`), the Accelerate loop (`train`) and its result."""

from multi2cap.train.config import ConfigError, TrainConfig, load_train_config
from multi2cap.train.engine import TrainResult
from multi2cap.train.stages import train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "load_train_config", "train"]
