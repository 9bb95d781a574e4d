"""Training callbacks of the recipe: plateau learning-rate drops and the max-norm constraint."""

from lightning_deepfeat.callbacks.divide_lr_on_plateau import DivideLROnPlateau
from lightning_deepfeat.callbacks.max_norm import MaxNormConstraint

__all__ = ["DivideLROnPlateau", "MaxNormConstraint"]
