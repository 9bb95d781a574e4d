"""Training callbacks of the recipe (plateau learning-rate drops, the max-norm constraint) and a prediction writer."""

from lightning_deepfeat.callbacks.divide_lr_on_plateau import DivideLROnPlateau
from lightning_deepfeat.callbacks.max_norm import MaxNormConstraint
from lightning_deepfeat.callbacks.prediction_writer import PredictionWriter

__all__ = ["DivideLROnPlateau", "MaxNormConstraint", "PredictionWriter"]
