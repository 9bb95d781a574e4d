"""Pictures: filter gallery, learning curves with LR drops, confusion matrix, class models, saliency, visualize CLI."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import Logger
from PIL import Image

from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.models import ConvNet, FeatureClassifier
from lightning_deepfeat.viz import (
    ConfusionMatrixPlot,
    FilterGallery,
    LearningCurves,
    class_model_images,
    filter_grid,
    saliency_maps,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, size: tuple[int, int]) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as image:
        assert image.size == size
        image.load()  # decodes: a truncated file fails here


def tiny_model(**kwargs: Any) -> FeatureClassifier:
    seed_everything(0)
    return FeatureClassifier(ConvNet(channels=[6], hidden=[16], dropout=0.0), num_classes=10, input_shape=(1, 8, 8), **kwargs)


class ImageLogger(Logger):
    """A logger whose experiment has TensorBoard's image API, recording the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        outer = self

        class Experiment:
            def add_figure(self, tag, figure, global_step=None, close=True):
                outer.calls.append(("figure", tag))

            def add_image(self, tag, image, global_step=None, dataformats="CHW"):
                assert image.ndim == len(dataformats)
                outer.calls.append(("image", tag))

        self._experiment = Experiment()

    @property
    def experiment(self):
        return self._experiment

    @property
    def name(self) -> str:
        return "image_logger"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def make_trainer(callbacks, tmp_path, logger=False, **kwargs) -> Trainer:
    return Trainer(
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


def test_filter_grid_layout_and_per_filter_normalisation():
    weight = torch.randn(6, 1, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    grid = filter_grid(weight, scale=4, pad=1)
    assert grid.shape == (2 * (12 + 1) + 1, 3 * (12 + 1) + 1)  # 6 filters: 3 columns, 2 rows
    first = grid[1:13, 1:13]
    assert first.min() == 0.0 and first.max() == 1.0  # each filter stretched to [0, 1] on its own
    colour = filter_grid(torch.randn(4, 3, 5, 5), scale=2, pad=1)
    assert colour.shape == (2 * 11 + 1, 2 * 11 + 1, 3)
    dense = filter_grid(torch.randn(5, 64), input_shape=(1, 8, 8), scale=1, pad=1)
    assert dense.shape == (2 * 9 + 1, 3 * 9 + 1)


def test_filter_gallery_writes_pngs_every_n_epochs_and_logs_images(tmp_path):
    logger = ImageLogger()
    gallery = FilterGallery(every_n_epochs=2, dirpath=str(tmp_path / "pics"), scale=8)
    make_trainer([gallery], tmp_path, logger=logger, max_epochs=3, limit_train_batches=2, limit_val_batches=1).fit(
        tiny_model(), DigitsDataModule(batch_size=32)
    )
    assert [p.rsplit("/", 1)[1] for p in gallery.paths] == ["filters_epoch001.png", "filters_epoch002.png"]  # every 2nd + last
    for path in gallery.paths:
        assert_png(path, (3 * (24 + 1) + 1, 2 * (24 + 1) + 1))  # 6 conv1 filters of 3×3, scale 8
    assert logger.calls.count(("image", "first_layer_filters")) == 2
    with pytest.raises(ValueError, match="every_n_epochs"):
        FilterGallery(every_n_epochs=0)


def test_learning_curves_mark_only_tenfold_drops(tmp_path):
    # LR: 0.1, 0.01 (÷10), 0.001 (÷10), then ÷2 (not marked)
    factors = {1: 0.1, 2: 0.1, 3: 0.5}

    def scheduler(optimizer):
        return torch.optim.lr_scheduler.MultiplicativeLR(optimizer, lambda epoch: factors.get(epoch, 1.0))

    model = tiny_model(optimizer=lambda p: torch.optim.SGD(p, lr=0.1), lr_scheduler=scheduler)
    curves = LearningCurves(dirpath=str(tmp_path))
    make_trainer([curves], tmp_path, max_epochs=4, limit_train_batches=3, limit_val_batches=2).fit(model, DigitsDataModule(batch_size=32))
    assert [round(lr, 6) for lr in curves.lrs] == [0.1, 0.01, 0.001, 0.0005]
    assert [(n, round(a, 6), round(b, 6)) for n, a, b in curves.drops] == [(96, 0.1, 0.01), (192, 0.01, 0.001)]
    assert [p[0] for p in curves.points] == [96, 192, 288, 384]  # examples seen: 3 batches of 32 per epoch
    assert all(0.0 <= p[1] <= 1.0 and 0.0 <= p[2] <= 1.0 for p in curves.points)
    assert_png(tmp_path / "learning_curves.png", (640, 400))
    with pytest.raises(ValueError, match="drop_factor"):
        LearningCurves(drop_factor=1.0)


def test_confusion_matrix_on_test_split(tmp_path):
    logger = ImageLogger()
    plot = ConfusionMatrixPlot(dirpath=str(tmp_path))
    model = tiny_model()
    trainer = make_trainer([plot], tmp_path, logger=logger, max_epochs=1)
    trainer.fit(model, DigitsDataModule(batch_size=64))
    metrics = trainer.test(model, DigitsDataModule(batch_size=64), verbose=False)[0]
    assert int(plot.matrix.sum()) == 359  # 20% of the 1,797 digits
    assert plot.matrix.diag().sum().item() / 359 == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert_png(plot.path, (500, 500))
    assert ("figure", "confusion_matrix") in logger.calls


def test_class_model_images_raise_the_class_score_and_leave_weights_alone():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    classes = [0, 3, 7]
    images = class_model_images(model, classes, (1, 8, 8), steps=30, lr=0.1, l2=0.01)
    assert images.shape == (3, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        start = model(torch.zeros(3, 1, 8, 8)).gather(1, torch.tensor([[0], [3], [7]])).squeeze(1)
        found = model(images)
    gain = found.gather(1, torch.tensor([[0], [3], [7]])).squeeze(1) - start
    assert (gain > 0.1).all()  # gradient ascent raised each target score
    others = (found.sum(1) - found.gather(1, torch.tensor([[0], [3], [7]])).squeeze(1)) / 9
    assert (found.gather(1, torch.tensor([[0], [3], [7]])).squeeze(1) > others).all()
    assert all(torch.equal(before[n], p) and p.requires_grad for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="steps"):
        class_model_images(model, [0], (1, 8, 8), steps=0)


def test_saliency_is_the_input_gradient_of_the_class_score():
    model = tiny_model()
    x = torch.randn(4, 1, 8, 8)
    maps, classes = saliency_maps(model, x)
    assert maps.shape == (4, 8, 8) and (maps >= 0).all()
    x1 = x[1:2].clone().requires_grad_(True)
    model.eval()
    model(x1)[0, classes[1]].backward()
    assert torch.allclose(maps[1], x1.grad.abs()[0, 0])


@pytest.mark.slow
def test_cli_visualize_end_to_end_with_the_config_saved_by_fit(tmp_path, capsys):
    from lightning_deepfeat.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "seed_everything: 0\n"
        "trainer: {max_epochs: 1, enable_progress_bar: false, enable_model_summary: false, default_root_dir: " + str(tmp_path / "run") + "}\n"
        "model:\n  class_path: FeatureClassifier\n  init_args:\n    features: {class_path: ConvNet, init_args: {channels: [4], hidden: [16], dropout: 0.0}}\n"
        "data: {class_path: DigitsDataModule, init_args: {batch_size: 64}}\n"
    )
    main(["fit", "--config", str(config), "--test_after_fit", "false"])
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    out = tmp_path / "vis"
    cli = main(["visualize", "--ckpt_path", str(ckpt), "--out", str(out), "--num_images", "6", "--ascent_steps", "20"])
    assert "deepfeat visualize: wrote" in capsys.readouterr().out
    assert_png(out / "class_models.png", (600, 270))  # 5 columns × 2 rows of 1.2 in, +0.3 in title, 100 dpi
    assert_png(out / "saliency.png", (720, 270))  # 6 images × 1.2 in, two rows
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(cli.model.head.weight, state["head.weight"])  # the checkpoint's weights were used
    with pytest.raises(FileNotFoundError, match="nope.ckpt.*does not exist"):
        main(["visualize", "--config", str(config), "--ckpt_path", str(tmp_path / "nope.ckpt")])
    with pytest.raises(ValueError, match="num_images"):
        main(["visualize", "--ckpt_path", str(ckpt), "--num_images", "0", "--out", str(out)])
