"""Pictures: first-layer filters, learning curves, confusion matrix, class models and saliency maps."""

from lightning_deepfeat.viz.backward import (
    class_model_images,
    plot_class_models,
    plot_saliency,
    saliency_maps,
    visualize,
)
from lightning_deepfeat.viz.confusion import ConfusionMatrixPlot, plot_confusion
from lightning_deepfeat.viz.curves import LearningCurves
from lightning_deepfeat.viz.filters import FilterGallery, filter_grid, first_layer

__all__ = [
    "ConfusionMatrixPlot",
    "FilterGallery",
    "LearningCurves",
    "class_model_images",
    "filter_grid",
    "first_layer",
    "plot_class_models",
    "plot_confusion",
    "plot_saliency",
    "saliency_maps",
    "visualize",
]
