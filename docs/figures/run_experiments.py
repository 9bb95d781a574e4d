"""Regenerate the numbers and figures of docs/experiments.md (CPU, a few minutes).

    python docs/figures/run_experiments.py [--fashion]   # --fashion adds the Fashion-MNIST probes
    python docs/figures/run_experiments.py --fashion-dropout   # only the dropout schedules on Fashion-MNIST

The committed figures come from this script on a shared 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.models import ConvNet, FeatureClassifier
from lightning_deepfeat.probes import AlternatingMinimization, ConvexHeadRefit, DropoutSchedule, layerwise_probe, write_layerwise_outputs, format_table
from lightning_deepfeat.viz import ConfusionMatrixPlot, FilterGallery, LearningCurves, visualize

FIG = "docs/figures"
results: dict = {}


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def digits_model(dropout=0.5, scheduler=None):
    seed_everything(0)
    return FeatureClassifier(ConvNet(channels=[32, 64], hidden=[128], dropout=dropout), num_classes=10, input_shape=(1, 8, 8), optimizer=sgd, lr_scheduler=scheduler)


def trainer(callbacks, **kw):
    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, default_root_dir="/tmp/deepfeat_exp", **kw)


def fit_eval(model, dm, callbacks, **kw):
    tr = trainer(callbacks, **kw)
    tr.fit(model, dm)
    test = tr.test(model, dm, verbose=False)[0]
    return tr, test


def layerwise(name, dm, model, steps):
    dm.setup("fit")
    runs = layerwise_probe(model, dm, steps=steps)
    paths = write_layerwise_outputs(runs, f"/tmp/deepfeat_exp/{name}", title=f"{name}: {steps} steps per layer")
    shutil.copy(paths["png"], f"{FIG}/{name}.png")
    results[name] = format_table(runs)
    print(results[name])


def digits():
    dm = DigitsDataModule(batch_size=32)
    # 1. layer-wise at initialisation and after 3 epochs of joint SGD
    layerwise("layerwise_digits_init", dm, digits_model(), 50)
    model = digits_model()
    trainer([], max_epochs=2).fit(model, dm)
    layerwise("layerwise_digits_trained", dm, model, 50)
    # 2. the recipe with pictures + convex head refit; LR ÷10 after epoch 8
    model = digits_model(scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.1))
    refit = ConvexHeadRefit(l2=5e-4, every_n_epochs=3)
    cbs = [FilterGallery(every_n_epochs=6, dirpath=FIG), LearningCurves(dirpath=FIG, filename="learning_curves_digits.png"), ConfusionMatrixPlot(dirpath=FIG, filename="confusion_digits.png"), refit]
    tr, test = fit_eval(model, dm, cbs, max_epochs=6)
    results["recipe_digits"] = {"test": test, "refit": [r.__dict__ for r in refit.results], "drops": cbs[1].drops, "points": cbs[1].points}
    shutil.move(cbs[0].paths[-1], f"{FIG}/filters_digits.png")
    visualize(model, dm, FIG, num_images=8, steps=100)
    shutil.move(f"{FIG}/class_models.png", f"{FIG}/class_models_digits.png")
    shutil.move(f"{FIG}/saliency.png", f"{FIG}/saliency_digits.png")
    # 3. alternating vs joint, same number of minibatch gradient evaluations
    results["alt_digits"] = {}
    for name, cb in (("joint", []), ("alt k=10 m=1", [AlternatingMinimization(10, 1)])):
        model = digits_model(dropout=0.0)
        t = time.time()
        _, test = fit_eval(model, dm, cb, max_epochs=3)
        from lightning_deepfeat.probes.layerwise import full_train_loss
        results["alt_digits"][name] = {"train_loss": full_train_loss(model, dm), "test_error": test["test_error"], "seconds": time.time() - t}
    # 4. dropout schedules: generalisation gap
    results["dropout_digits"] = {}
    for name, cb in (("p=0", None), ("linear 0.5→0", DropoutSchedule("linear", 0.5, 0.0))):
        model = digits_model(dropout=0.5 if cb else 0.0)
        from lightning.pytorch import Callback

        class Gap(Callback):
            rows = []

            def on_train_epoch_end(self, tr, pl):
                m = tr.callback_metrics
                self.rows.append((float(m["train_error"]), float(m["val_error"])))

        g = Gap()
        g.rows = []
        _, test = fit_eval(model, dm, [g] + ([cb] if cb else []), max_epochs=5)
        results["dropout_digits"][name] = {"train_error_last": g.rows[-1][0], "val_error_last": g.rows[-1][1], "test_error": test["test_error"], "gap": g.rows[-1][1] - g.rows[-1][0]}


def fashion(max_steps=600):
    from lightning_deepfeat.data import FashionMNISTDataModule
    from lightning_deepfeat.probes.layerwise import full_train_loss

    dm = FashionMNISTDataModule(root="/usr/share/datasets/fashion-mnist", batch_size=128)

    def model(dropout=0.0):
        seed_everything(0)
        return FeatureClassifier(ConvNet(channels=[16, 32], hidden=[64], dropout=dropout), num_classes=10, input_shape=(1, 28, 28), optimizer=sgd)

    layerwise("layerwise_fashion_init", dm, model(), 100)
    results["alt_fashion"] = {}
    for name, cb in (("joint", []), ("alt k=10 m=1", [AlternatingMinimization(10, 1)])):
        m = model()
        _, test = fit_eval(m, dm, cb, max_steps=max_steps, limit_val_batches=5)
        results["alt_fashion"][name] = {"train_loss": full_train_loss(m, dm), "test_error": test["test_error"]}
        print(name, results["alt_fashion"][name], flush=True)


def fashion_dropout(epochs=30, train_images=6000):
    """Dropout schedules where dropout has something to do: 6,000 Fashion-MNIST training images, 30 epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lightning.pytorch import Callback

    from lightning_deepfeat.data import FashionMNISTDataModule

    class Curves(Callback):
        def __init__(self):
            self.rows = []

        def on_train_epoch_end(self, tr, pl):
            m = tr.callback_metrics
            p = float(m["dropout_p"]) if "dropout_p" in m else 0.0
            self.rows.append((float(m["train_error"]), float(m["val_error"]), p))

    root = "/usr/share/datasets/fashion-mnist"
    # val_fraction leaves `train_images` to train on; 40 batches (5,120 images) of the rest validate
    val_fraction = 1 - train_images / 60000
    arms = (
        ("p = 0", 0.0, None),
        ("p = 0.5", 0.5, None),
        ("p linear 0.5 → 0", 0.5, DropoutSchedule("linear", 0.5, 0.0)),
        ("p linear 0 → 0.5", 0.5, DropoutSchedule("linear", 0.0, 0.5)),
    )
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for name, p, schedule in arms:
        seed_everything(0)
        dm = FashionMNISTDataModule(root=root, batch_size=128, val_fraction=val_fraction, translate=0, hflip=False)
        model = FeatureClassifier(ConvNet(channels=[32, 64], hidden=[256], dropout=p), num_classes=10, input_shape=(1, 28, 28), optimizer=sgd)
        curves = Curves()
        t = time.time()
        _, test = fit_eval(model, dm, [curves] + ([schedule] if schedule else []), max_epochs=epochs, limit_val_batches=40)
        train, val, _ = zip(*curves.rows)
        out[name] = {"train_error_last": train[-1], "val_error_last": val[-1], "gap_last": val[-1] - train[-1],
                     "best_val_error": min(val), "test_error": test["test_error"], "seconds": time.time() - t}
        print(name, out[name], flush=True)
        epochs_axis = range(1, len(train) + 1)
        (line,) = axes[0].plot(epochs_axis, [100 * (v - tr) for tr, v in zip(train, val)], label=name)
        axes[1].plot(epochs_axis, [100 * v for v in val], color=line.get_color(), label=f"{name}: val")
        axes[1].plot(epochs_axis, [100 * tr for tr in train], color=line.get_color(), ls=":", lw=0.9)
    axes[0].set(xlabel="epoch", ylabel="val error − train error (points)", title="generalisation gap")
    axes[1].set(xlabel="epoch", ylabel="error (%)", title="val (solid) and running train error (dotted)", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Dropout schedules, Fashion-MNIST, {train_images:,} training images, ConvNet [32, 64], dense 256")
    fig.tight_layout()
    fig.savefig(f"{FIG}/fashion/dropout_schedules.png")
    results["dropout_fashion"] = out


if __name__ == "__main__":
    if "--fashion-dropout" in sys.argv:
        fashion_dropout()
        json.dump(results, open("/tmp/deepfeat_exp/results_dropout_fashion.json", "w"), indent=1, default=str)
        print(json.dumps(results, indent=1, default=str))
        sys.exit(0)
    digits()
    json.dump(results, open("/tmp/deepfeat_exp/results_digits.json", "w"), indent=1, default=str)
    if "--fashion" in sys.argv:
        fashion()
    json.dump(results, open("/tmp/deepfeat_exp/results.json", "w"), indent=1, default=str)
    print(json.dumps(results, indent=1, default=str))
