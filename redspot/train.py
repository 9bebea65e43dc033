"""``redspot.train.fit``: train from the notebook on Ray Train with DeepSpeed.

See ``redspot.training`` and docs/training.md; ``%%ray_train`` calls the same.
"""

from .training.checkpoints import consolidate, latest
from .training.config import InvalidTraining
from .training.fit import TrainingFailed, TrainResult, fit
from .training.worker import current as context

__all__ = ["InvalidTraining", "TrainResult", "TrainingFailed", "consolidate", "context",
           "fit", "latest"]
