"""Feature nets (φ) and the LightningModule that puts a logistic-regression head on them."""

from lightning_deepfeat.models.alexnet import AlexNet
from lightning_deepfeat.models.classifier import FeatureClassifier
from lightning_deepfeat.models.convnet import ConvNet
from lightning_deepfeat.models.mlp import MLP

__all__ = ["MLP", "AlexNet", "ConvNet", "FeatureClassifier"]
