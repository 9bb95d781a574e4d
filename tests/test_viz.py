"""Pictures: filter gallery, learning curves with LR drops, confusion matrix, class models, saliency, visualize CLI."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from PIL import Image
from torch import nn

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
    return FeatureClassifier(
        ConvNet(channels=[6], hidden=[16], dropout=0.0), num_classes=10, input_shape=(1, 8, 8), **kwargs
    )


class ImageLogger(Logger):
    """A logger whose experiment has TensorBoard's image API, recording the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.figures: dict[str, Any] = {}
        outer = self

        class Experiment:
            def add_figure(self, tag, figure, global_step=None, close=True):
                outer.calls.append(("figure", tag))
                outer.figures[tag] = figure

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
    assert [p.rsplit("/", 1)[1] for p in gallery.paths] == [
        "filters_epoch001.png",
        "filters_epoch002.png",
    ]  # every 2nd + last
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
    make_trainer([curves], tmp_path, max_epochs=4, limit_train_batches=3, limit_val_batches=2).fit(
        model, DigitsDataModule(batch_size=32)
    )
    assert [round(lr, 6) for lr in curves.lrs] == [0.1, 0.01, 0.001, 0.0005]
    assert [(n, round(a, 6), round(b, 6)) for n, a, b in curves.drops] == [(96, 0.1, 0.01), (192, 0.01, 0.001)]
    assert [p[0] for p in curves.points] == [96, 192, 288, 384]  # examples seen: 3 batches of 32 per epoch
    assert all(0.0 <= p[1] <= 1.0 and 0.0 <= p[2] <= 1.0 for p in curves.points)
    assert_png(tmp_path / "learning_curves.png", (640, 400))
    with pytest.raises(ValueError, match="drop_factor"):
        LearningCurves(drop_factor=1.0)


class CountingClassifier(FeatureClassifier):
    """A user's subclass (``**kwargs``) that counts its forward passes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.forward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return super().forward(x)


def test_confusion_matrix_on_test_split(tmp_path):
    logger = ImageLogger()
    plot = ConfusionMatrixPlot(dirpath=str(tmp_path))
    seed_everything(0)
    model = CountingClassifier(
        features=ConvNet(channels=[6], hidden=[16], dropout=0.0), num_classes=10, input_shape=(1, 8, 8)
    )
    trainer = make_trainer([plot], tmp_path, logger=logger, max_epochs=1)
    trainer.fit(model, DigitsDataModule(batch_size=64))
    model.forward_calls = 0
    datamodule = DigitsDataModule(batch_size=64)
    metrics = trainer.test(model, datamodule, verbose=False)[0]
    assert model.forward_calls == 6  # one forward pass per test batch (359 digits / 64): the plot reuses test_step's
    assert int(plot.matrix.sum()) == 359  # 20% of the 1,797 digits
    assert plot.matrix.diag().sum().item() / 359 == pytest.approx(metrics["test_acc"], abs=1e-6)
    # the same counts as the model's own predictions on the test split, cell by cell
    images, labels = datamodule.splits["test"]
    model.eval()
    with torch.no_grad():
        predicted = model(datamodule.normalize(images)).argmax(1)
    assert torch.equal(plot.matrix, torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10))
    assert plot.matrix.dtype == torch.int64
    assert_png(plot.path, (500, 500))
    assert ("figure", "confusion_matrix") in logger.calls


class PlainModule(LightningModule):
    """A user's own module: ``test_step`` returns nothing, or the predicted classes under ``"preds"``."""

    def __init__(self, return_preds: bool) -> None:
        super().__init__()
        self.num_classes = 10
        self.return_preds = return_preds
        self.net = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        logits = self(x)
        self.log("test_loss", F.cross_entropy(logits, y))
        return {"preds": logits.argmax(1)} if self.return_preds else None


def test_confusion_matrix_needs_the_predictions_from_test_step(tmp_path):
    seed_everything(0)
    plot = ConfusionMatrixPlot(dirpath=str(tmp_path))
    with pytest.raises(
        ValueError,
        match=r"ConfusionMatrixPlot reads the predictions from what PlainModule\.test_step "
        r"returns: the logits \(64, 10\) or the predicted classes \(64,\).*"
        r"under 'logits' \(or 'preds'\).*it returned NoneType\.",
    ):
        make_trainer([plot], tmp_path).test(
            PlainModule(return_preds=False), DigitsDataModule(batch_size=64), verbose=False
        )
    module = PlainModule(return_preds=True)
    make_trainer([plot], tmp_path).test(module, DigitsDataModule(batch_size=64), verbose=False)
    assert int(plot.matrix.sum()) == 359
    assert_png(tmp_path / "confusion_matrix.png", (500, 500))


def _drop_at_epoch_1(epoch: int) -> float:
    return {1: 0.1, 2: 0.5}.get(epoch, 1.0)  # lr 0.1, then 0.01 (÷10), then 0.005 (÷2, not marked)


def _lr_drops(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.MultiplicativeLR(optimizer, _drop_at_epoch_1)


def _pictures_run(root: Path, ckpt_path: Path | None = None) -> tuple[LearningCurves, FilterGallery]:
    model = tiny_model(optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9), lr_scheduler=_lr_drops)
    curves, gallery = LearningCurves(dirpath=str(root / "pics")), FilterGallery(dirpath=str(root / "pics"))
    Trainer(
        max_epochs=4,
        limit_train_batches=3,
        limit_val_batches=2,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[curves, gallery, ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=4, save_top_k=-1)],
    ).fit(model, datamodule=DigitsDataModule(batch_size=32, translate=1), ckpt_path=ckpt_path)
    return curves, gallery


def test_learning_curves_and_filter_gallery_survive_a_resume(tmp_path):
    curves, gallery = _pictures_run(tmp_path / "ref")
    # resumed from epoch 2 after 2 of its 3 batches: the history before comes from the checkpoint
    resumed, resumed_gallery = _pictures_run(
        tmp_path / "run", ckpt_path=tmp_path / "ref" / "ckpt" / "epoch=2-step=8.ckpt"
    )
    assert [p[0] for p in curves.points] == [96, 192, 288, 384]
    assert [(n, round(a, 6), round(b, 6)) for n, a, b in curves.drops] == [(96, 0.1, 0.01)]
    assert resumed.points == curves.points  # train and val errors bit for bit
    assert (resumed.lrs, resumed.drops, resumed.examples_seen) == (curves.lrs, curves.drops, curves.examples_seen)
    assert Path(resumed.path).read_bytes() == Path(curves.path).read_bytes()  # the same picture
    names = [f"filters_epoch{e:03d}.png" for e in range(4)]
    assert [Path(p).name for p in gallery.paths] == [Path(p).name for p in resumed_gallery.paths] == names
    assert resumed_gallery.paths[:2] == gallery.paths[:2]  # written before the interruption, by the first run


def test_learning_curves_legend_names_the_drop_factor(tmp_path):
    factors = {1: 0.25, 2: 0.5}  # ÷4 (marked), then ÷2 (not)

    def scheduler(optimizer):
        return torch.optim.lr_scheduler.MultiplicativeLR(optimizer, lambda epoch: factors.get(epoch, 1.0))

    logger = ImageLogger()
    curves = LearningCurves(dirpath=str(tmp_path), drop_factor=4)
    model = tiny_model(optimizer=lambda p: torch.optim.SGD(p, lr=0.1), lr_scheduler=scheduler)
    make_trainer([curves], tmp_path, logger=logger, max_epochs=3, limit_train_batches=2, limit_val_batches=1).fit(
        model, DigitsDataModule(batch_size=32)
    )
    assert [(n, round(a, 6), round(b, 6)) for n, a, b in curves.drops] == [(64, 0.1, 0.025)]
    legend = logger.figures["learning_curves"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train error", "val error", "LR ÷4 drop"]


def test_load_from_checkpoint_leaves_the_global_rng_alone(tmp_path):
    model = tiny_model()
    trainer = make_trainer([], tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, DigitsDataModule(batch_size=64))
    trainer.save_checkpoint(tmp_path / "model.ckpt")  # holds the random state of now, for a resume
    # building the net draws its initial weights from the global RNG, with or without a checkpoint ...
    torch.manual_seed(1234)
    FeatureClassifier(ConvNet(channels=[6], hidden=[16], dropout=0.0), num_classes=10, input_shape=(1, 8, 8))
    after_building = torch.get_rng_state()
    # ... and loading the checkpoint's weights changes nothing more: the checkpoint's random state is not put back
    torch.manual_seed(1234)
    loaded = FeatureClassifier.load_from_checkpoint(tmp_path / "model.ckpt")
    assert torch.equal(torch.get_rng_state(), after_building)
    assert torch.equal(loaded.head.weight, model.head.weight)
    before = torch.get_rng_state()
    # test(ckpt_path=...) loads weights only: the random state after it is that of test() without a checkpoint
    make_trainer([], tmp_path).test(loaded, DigitsDataModule(batch_size=64), verbose=False)
    after_plain_test = torch.get_rng_state()
    torch.set_rng_state(before)
    make_trainer([], tmp_path).test(
        loaded, DigitsDataModule(batch_size=64), ckpt_path=tmp_path / "model.ckpt", verbose=False
    )
    assert torch.equal(torch.get_rng_state(), after_plain_test)


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
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # gradients went to the input only
    x1 = x[1:2].clone().requires_grad_(True)
    model.eval()
    model(x1)[0, classes[1]].backward()
    assert torch.allclose(maps[1], x1.grad.abs()[0, 0])


@pytest.mark.slow
def test_cli_visualize_end_to_end_with_the_config_saved_by_fit(tmp_path, capsys):
    from lightning_deepfeat.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""\
seed_everything: 0
trainer:
  {{max_epochs: 1, enable_progress_bar: false, enable_model_summary: false, default_root_dir: {tmp_path / "run"}}}
model:
  class_path: FeatureClassifier
  init_args:
    features: {{class_path: ConvNet, init_args: {{channels: [4], hidden: [16], dropout: 0.0}}}}
data: {{class_path: DigitsDataModule, init_args: {{batch_size: 64}}}}
"""
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
