"""Regenerate the numbers and figures of docs/experiments.md (CPU, a few minutes).

    python docs/figures/run_experiments.py [--fashion]   # --fashion adds the Fashion-MNIST probes

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


if __name__ == "__main__":
    digits()
    json.dump(results, open("/tmp/deepfeat_exp/results_digits.json", "w"), indent=1, default=str)
    if "--fashion" in sys.argv:
        fashion()
    json.dump(results, open("/tmp/deepfeat_exp/results.json", "w"), indent=1, default=str)
    print(json.dumps(results, indent=1, default=str))
