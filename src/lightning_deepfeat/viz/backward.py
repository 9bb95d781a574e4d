"""Running the network backward: class-model images and saliency maps (Simonyan et al. 2013)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from lightning_deepfeat.inspection import frozen, split_batches
from lightning_deepfeat.validation import check_int, check_ints, check_number
from lightning_deepfeat.viz._common import agg_pyplot, save_figure


def class_model_images(
    model: nn.Module,
    classes: Sequence[int],
    input_shape: Sequence[int],
    steps: int = 200,
    lr: float = 0.1,
    l2: float = 0.05,
    seed: int = 0,
) -> torch.Tensor:
    r"""For each class c, find an input that maximises the class score, by gradient ascent.

    .. math::
        x_c^\star = \arg\max_x\; S_c(x) - λ\lVert x\rVert_2^2

    S_c is the unnormalised score (logit) of class c, x lives in the normalised input
    space and starts at small noise; the model is in eval mode (no dropout) and its
    weights are not changed. Adam with step ``lr`` for ``steps`` iterations,
    λ = ``l2``. Returns ``(len(classes), *input_shape)``.
    """
    check_int("steps", steps, low=1, hint="gradient-ascent steps")
    check_number("lr", lr, low=0, low_open=True, hint="Adam's step size")
    l2 = check_number("l2", l2, low=0, hint="the λ of λ‖x‖²")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x = (0.01 * torch.randn(len(classes), *input_shape, generator=gen)).to(device).requires_grad_(True)
    target = torch.as_tensor(list(classes), device=device)
    opt = torch.optim.Adam([x], lr=lr)
    try:
        with frozen(model):  # gradients flow to x only; the weights' flags come back as they were
            for _ in range(steps):
                opt.zero_grad()
                scores = model(x).gather(1, target[:, None]).squeeze(1)
                objective = scores - l2 * x.pow(2).flatten(1).sum(1)
                (-objective.sum()).backward()
                opt.step()
    finally:
        model.train(was)
    return x.detach()


def saliency_maps(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Image-specific class saliency M_{ij} = max_channel |∂S_c/∂x_{c',ij}| at the image x.

    ``targets`` default to the predicted classes. Returns ``(maps (N, H, W), classes (N,))``.
    The weights get no gradient (their ``.grad`` stays as it was).
    """
    was = model.training
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    try:
        with frozen(model):
            scores = model(x)
            classes = scores.argmax(1) if targets is None else targets.to(scores.device)
            scores.gather(1, classes[:, None]).sum().backward()
    finally:
        model.train(was)
    assert x.grad is not None  # x requires grad and the scores depend on it
    grad = x.grad.abs()
    maps = grad.amax(1) if grad.dim() == 4 else grad
    return maps.detach(), classes.detach()


def _show(ax: Any, image: torch.Tensor, cmap: str = "gray") -> None:
    img = image.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] == 3:
        img = img.permute(1, 2, 0)
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
        ax.imshow(img.numpy())
    else:
        img = img.mean(0) if img.dim() == 3 else img
        ax.imshow(img.numpy(), cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_class_models(images: torch.Tensor, names: Sequence[str], path: str, cell: float = 1.2, dpi: int = 100) -> str:
    """Grid of class-model images, one per class, each normalised on its own (``cols·cell × rows·cell`` inches)."""
    plt = agg_pyplot()
    n = images.shape[0]
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.3), dpi=dpi, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i])
            ax.set_title(str(names[i]), fontsize=8)
        else:
            ax.axis("off")
    fig.suptitle("class models: argmax_x S_c(x) − λ‖x‖²", fontsize=8)
    return save_figure(fig, path, dpi=dpi)


def plot_saliency(
    images: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor,
    predicted: torch.Tensor,
    names: Sequence[str],
    path: str,
    cell: float = 1.2,
    dpi: int = 100,
) -> str:
    """Two rows: the test images and their saliency maps (``n·cell × 2·cell`` inches)."""
    plt = agg_pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(n * cell, 2 * cell + 0.3), dpi=dpi, squeeze=False)
    for i in range(n):
        _show(axes[0, i], images[i])
        axes[0, i].set_title(f"y={names[int(labels[i])]} ŷ={names[int(predicted[i])]}", fontsize=6)
        _show(axes[1, i], maps[i], cmap="hot")
    fig.suptitle("saliency |∂S_ŷ/∂x|", fontsize=8)
    return save_figure(fig, path, dpi=dpi)


def visualize(
    model: nn.Module,
    datamodule: Any,
    out: str,
    num_images: int = 8,
    classes: Sequence[int] | None = None,
    steps: int = 200,
    l2: float = 0.05,
    lr: float = 0.1,
) -> dict[str, str]:
    """Write ``class_models.png`` and ``saliency.png`` for ``model`` into ``out``; returns the paths.

    Saliency maps are computed for the first ``num_images`` images of the test split
    (normalised as in training).
    """
    check_int("num_images", num_images, low=1, high=32, hint="test images with a saliency map")
    net = cast(Any, model)  # a FeatureClassifier: num_classes, input_shape
    num_classes = int(net.num_classes)
    checked = check_ints(
        "classes", classes, low=0, high=num_classes - 1, non_empty=True, allow_none=True, hint="class indices"
    )
    classes = list(range(num_classes)) if checked is None else list(checked)
    names = list(getattr(datamodule, "class_names", None) or [str(i) for i in range(num_classes)])
    input_shape = tuple(net.input_shape)
    os.makedirs(out, exist_ok=True)
    paths = {}
    images = class_model_images(model, classes, input_shape, steps=steps, lr=lr, l2=l2)
    paths["class_models"] = plot_class_models(
        images, [names[c] for c in classes], os.path.join(out, "class_models.png")
    )
    datamodule.setup("test")
    x, y = next(split_batches(datamodule, "test", device=next(model.parameters()).device, batch_size=num_images))
    maps, predicted = saliency_maps(model, x)
    paths["saliency"] = plot_saliency(x, maps, y, predicted, names, os.path.join(out, "saliency.png"))
    return paths
