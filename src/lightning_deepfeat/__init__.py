"""lightning_deepfeat: learn the features, then do logistic regression.

A feature map ``φ_W(x) = σ_L(W_L … σ_1(W_1 x))`` topped by multiclass logistic
regression, trained end to end with minibatch SGD, packaged as PyTorch Lightning
components: models, callbacks, data modules and a LightningCLI.
"""

from lightning_deepfeat.models import MLP, AlexNet, ConvNet, FeatureClassifier
from lightning_deepfeat.version import __version__

__all__ = ["MLP", "AlexNet", "ConvNet", "FeatureClassifier", "__version__"]
