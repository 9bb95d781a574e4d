"""``FeatureClassifier``: a learned feature map φ topped by multiclass logistic regression."""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_deepfeat.batches import IndexBatch
from lightning_deepfeat.metrics import ClassificationError
from lightning_deepfeat.models._rebuild import (
    UnrebuildableFactory,
    build_factory,
    build_from_spec,
    factory_spec,
    module_spec,
    outermost_init_call,
)
from lightning_deepfeat.models.convnet import ConvNet
from lightning_deepfeat.validation import (
    check_bool,
    check_callable,
    check_instance,
    check_int,
    check_number,
    check_shape,
)
from lightning_deepfeat.version import __version__

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]
# the arguments recorded in a rebuildable form (a spec) instead of as given
_SPEC_ARGUMENTS = ("features", "optimizer", "lr_scheduler")


def krizhevsky_sgd(params: Iterable[Any]) -> Optimizer:
    """SGD with lr 0.01, momentum 0.9 and weight decay 5e-4 (Krizhevsky et al. 2012)."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def _check_lr(lr: Any) -> float | None:
    return check_number("lr", lr, low=0.0, low_open=True, allow_none=True, hint="None: the optimizer factory's own")


def _declared(check: Callable[..., Any], name: str, value: Any, **kwargs: Any) -> Any:
    """``check(name, value, **kwargs)``, or ``None`` where a data module declares no valid ``name``.

    ``None``: there is nothing to compare.
    """
    try:
        return check(name, value, **kwargs)
    except ValueError:
        return None


def _spec(name: str, value: Any) -> Any:
    """The plain-data form in which ``hparams`` keep the argument ``name`` (one of ``_SPEC_ARGUMENTS``)."""
    if name == "features":
        if isinstance(value, nn.Module):
            return module_spec(value)
        return value if value is None or isinstance(value, dict) else None
    if value is None or isinstance(value, (str, dict)) or not callable(value):
        return value
    return factory_spec(value)


class FeatureClassifier(LightningModule):
    r"""A feature net φ followed by a multiclass logistic-regression head, trained jointly.

    .. math::
        p(y = k \mid x) = \mathrm{softmax}_k(A\, \mathrm{flatten}(φ_W(x)) + b), \qquad
        \mathcal{L} = -\frac{1}{N}\sum_i \log p(y_i \mid x_i)

    Cross-entropy on the softmax is the multiclass logistic loss, convex in the head
    ``(A, b)`` for fixed features.

    Two ways in:

    * pass any ``nn.Module`` as ``features`` (or a ``class_path`` dict in YAML);
    * subclass and override :meth:`build_features` (and :meth:`build_head` if the head
      is not a plain ``nn.Linear``).

    The head's input size comes from a dry run of φ on ``input_shape`` at construction,
    which also materialises lazy layers, so nobody computes flatten sizes by hand.

    Override points for subclasses: :meth:`build_features`, :meth:`build_head`,
    :meth:`extract_features`, :meth:`compute_loss`, :meth:`configure_optimizers`.

    Logged (torchmetrics objects, reduced across processes): ``{stage}_loss``,
    ``{stage}_error`` and, for ``val``/``test``, ``{stage}_acc`` and ``{stage}_acc_top5``
    (when there are more than 5 classes); ``stage`` is ``train``, ``val`` or ``test``.

    A non-finite training loss raises ``FloatingPointError`` naming the step (set the
    class attribute ``check_finite_loss = False`` in a subclass to skip the check, which
    reads one scalar back from the device per step). Checkpoints already written stay
    intact and loadable.

    **Checkpoints.** ``hparams`` hold what the *outermost* constructor was given, as plain
    data, because ``load_from_checkpoint`` calls the class with them: φ as its
    ``{"class_path", "init_args"}`` spec (``None`` for a module that records no
    ``init_args``), the optimizer and scheduler factories as import paths and arguments.
    An argument that a subclass passes to ``super().__init__`` itself (a φ it builds, a
    fixed ``num_classes``) is not recorded: the subclass passes it again on reload.

    Args:
        features: the feature net φ (or its ``{"class_path", "init_args"}`` spec). ``None``
            calls :meth:`build_features`, whose default is a :class:`ConvNet`.
        num_classes: number of classes (≥ 2); the CLI links it from the data module.
        input_shape: shape of one input ``(C, H, W)`` (or any shape φ accepts), used for
            the dry run and :attr:`example_input_array`; the CLI links it from the data module.
        optimizer: a callable ``params -> Optimizer``, e.g. ``partial(torch.optim.Adam,
            lr=1e-3)``. Default: SGD, lr 0.01, momentum 0.9, weight decay 5e-4. From the CLI,
            ``--optimizer`` overrides it. A class, a module-level function, or a
            ``functools.partial`` of either with plain-data keywords is saved in the
            checkpoint and rebuilt by ``load_from_checkpoint``; any other (a lambda, a local
            function) must be passed again there.
        lr_scheduler: optional callable ``optimizer -> LRScheduler`` (stepped per epoch),
            saved like ``optimizer``.
        lr: when set, the learning rate of every parameter group of the optimizer that
            ``optimizer`` builds, replacing the factory's own. Lightning's LR finder
            (``Tuner.lr_find``) reads and sets this attribute.
        channels_last: store φ's 4-D weights and feed it its inputs in the ``channels_last``
            (NHWC) memory format. The results are the same up to float rounding; convolutions
            are faster on CPUs (oneDNN; measured 1.2-1.3× on the 2-core reference machine)
            and on tensor-core GPUs.
    """

    check_finite_loss: bool = True

    def __init__(
        self,
        features: nn.Module | None = None,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 8, 8),
        optimizer: OptimizerFactory = krizhevsky_sgd,
        lr_scheduler: SchedulerFactory | None = None,
        lr: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, low=2, hint="logistic regression needs two classes")
        self.input_shape = check_shape("input_shape", input_shape)
        self.optimizer_factory = self._factory("optimizer", optimizer)
        self.scheduler_factory = None if lr_scheduler is None else self._factory("lr_scheduler", lr_scheduler)
        self.lr = _check_lr(lr)

        if isinstance(features, dict):
            features = build_from_spec(features)
        if features is not None:
            check_instance("features", features, nn.Module, what="an nn.Module")
        self.features = features if features is not None else self.build_features()
        self.feature_dim = self._dry_run()
        self.head = self.build_head(self.feature_dim, num_classes)
        self.channels_last = check_bool("channels_last", channels_last)
        if self.channels_last:  # after the dry run, which materialises lazy layers
            self.features.to(memory_format=torch.channels_last)

        self.save_hyperparameters()

        self.train_metrics = self._make_metrics("train", with_accuracy=False)
        self.val_metrics = self._make_metrics("val", with_accuracy=True)
        self.test_metrics = self._make_metrics("test", with_accuracy=True)
        self._registered_metrics: set[str | None] = set()  # prefixes whose metrics were passed to self.log this epoch

    # ----------------------------------------------------------------- hyperparameters
    def _factory(self, argument: str, value: Any) -> Callable[..., Any]:
        """``value`` if callable, else the factory its saved spec describes (see ``_rebuild``)."""
        if isinstance(value, (str, dict)):
            factory = build_factory(value, argument, type(self).__name__)
            if isinstance(factory, UnrebuildableFactory):  # loads for inference; training raises this
                rank_zero_warn(factory.message + " Until then the model cannot be trained.", category=UserWarning)
            return factory
        takes = "the parameters" if argument == "optimizer" else "the optimizer"
        return check_callable(argument, value, what=f"a callable taking {takes} (or its saved spec)")

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: types.FrameType | None = None,
        logger: bool = True,
    ) -> None:
        """Lightning's ``save_hyperparameters``, keeping ``hparams`` what ``load_from_checkpoint`` can pass back.

        ``load_from_checkpoint`` calls the class with every saved hyperparameter, so on top
        of Lightning's rules:

        * only what the outermost ``__init__`` received (by name or through ``**kwargs``)
          is saved. A subclass ``def __init__(self, width=64, **kw): super().__init__(
          features=make(width), **kw)`` saves ``width`` and ``kw``, not ``features``:
          reloading calls ``MyNet(width=64, **kw)``, which builds φ again;
        * φ is saved as its ``{"class_path", "init_args"}`` spec (``None`` when it records
          no ``init_args``), the optimizer and scheduler factories as import paths and
          arguments, so that the checkpoint stays plain data (``weights_only=True``).

        The constructor already records a subclass's arguments; calling this again in a
        subclass is harmless.
        """
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        ignored = {ignore} if isinstance(ignore, str) else {i for i in (ignore or ()) if isinstance(i, str)}
        listed = {a for a in args if isinstance(a, str)}
        before = {name: self.hparams[name] for name in _SPEC_ARGUMENTS if name in self.hparams}
        call = outermost_init_call(self, frame)
        # what the outermost call received by name; None when unknown (no constructor call, or positional *args)
        received = call.arguments if call is not None else None
        # arguments given to an inner __init__ by the subclass itself: passing them back would pass them twice
        unforwarded = call.inner_names - received.keys() if call is not None and received is not None else set()
        super().save_hyperparameters(
            *args,
            ignore=sorted(ignored | {n for n in _SPEC_ARGUMENTS if n not in listed} | (unforwarded - listed)),
            frame=frame,
            logger=logger,
        )
        local_args = inspect.getargvalues(frame).locals if call is not None and frame is not None else {}
        for name in _SPEC_ARGUMENTS:
            if name in ignored:
                continue
            if received is not None:  # what the outermost call received, if it received it
                present, value = name in received, received.get(name)
            elif name in self.hparams:  # listed explicitly: Lightning collected it
                present, value = True, self.hparams[name]
            elif call is not None and name in local_args:  # positional *args outside: what this frame saw
                present, value = True, local_args[name]
            else:  # not called from a constructor: keep what was recorded
                present, value = name in before, before.get(name)
            if present:
                self.hparams[name] = _spec(name, value)
            else:
                self.hparams.pop(name, None)

    @property
    def example_input_array(self) -> Any:
        """``zeros(1, *input_shape)`` in the parameters' dtype, unless set otherwise.

        What ``to_onnx`` exports on and the model summary's in/out sizes come from; in the
        parameters' dtype so that it also runs under ``bf16-true`` or ``64-true``.
        """
        example = getattr(self, "_example_input", None)
        if example is not None:
            return example
        param = next((p for p in self.parameters() if p.is_floating_point()), None)
        return torch.zeros(1, *self.input_shape, dtype=param.dtype if param is not None else torch.get_default_dtype())

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input = example

    def _attached_trainer(self) -> Trainer | None:
        """The Trainer this module is attached to, or ``None`` (``self.trainer`` raises when there is none)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    # ----------------------------------------------------------------- override points
    def build_features(self) -> nn.Module:
        """Build φ when none is passed. Subclasses override this; the default is ``ConvNet()``."""
        return ConvNet()

    def build_head(self, in_features: int, num_classes: int) -> nn.Module:
        """Build the logistic-regression head; the default is ``nn.Linear(in_features, num_classes)``."""
        return nn.Linear(in_features, num_classes)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) flattened to ``(N, feature_dim)``: what the head sees."""
        return torch.flatten(self.features(x), 1)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The multiclass logistic loss (mean cross-entropy)."""
        return F.cross_entropy(logits, target)

    # ----------------------------------------------------------------- model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.extract_features(x))

    def _dry_run(self) -> int:
        was_training = self.features.training
        self.features.eval()
        probe = torch.zeros(2, *self.input_shape)
        try:
            with torch.no_grad():
                out = self.features(probe)
        except Exception as err:  # the message names the culprit: φ on this input shape
            raise ValueError(
                f"`features` ({type(self.features).__name__}) failed on a dry run with input_shape="
                f"{self.input_shape}: {err}"
            ) from err
        finally:
            self.features.train(was_training)
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"`features` must map a batch of shape (N, *input_shape) to (N, ...) so that flattening gives "
                f"(N, D); on input (2, {', '.join(map(str, self.input_shape))}) it returned {shape}."
            )
        return math.prod(out.shape[1:])

    def _make_metrics(self, stage: str, with_accuracy: bool) -> MetricCollection:
        metrics: dict[str, Any] = {
            "loss": MeanMetric(),
            "error": ClassificationError(num_classes=self.num_classes, average="micro"),
        }
        if with_accuracy:
            metrics["acc"] = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
            if self.num_classes > 5:
                metrics["acc_top5"] = MulticlassAccuracy(num_classes=self.num_classes, top_k=5, average="micro")
        return MetricCollection(metrics, prefix=f"{stage}_")

    # ----------------------------------------------------------------- steps
    def _step(self, batch: Any, metrics: MetricCollection, on_step: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the batch, with the stage's metrics updated and registered for logging."""
        if isinstance(batch, IndexBatch):
            raise TypeError(
                "the batch is an IndexBatch (sample indices, not images): only the data module's own "
                "on_after_batch_transfer gathers the images, so this loader must be used with the data module "
                "attached: `trainer.fit(model, datamodule=dm)`. A loader the data module hands out while it is "
                "not attached to a running Trainer (`dm.train_dataloader()` by hand) yields images."
            )
        x, y = batch
        logits = self.view_averaged_logits(x) if x.dim() == len(self.input_shape) + 2 else self(x)
        loss = self.compute_loss(logits, y)
        for name, metric in metrics.items():
            if name.endswith("_loss"):
                metric.update(loss.detach(), weight=y.shape[0])
            else:
                metric.update(logits.detach(), y)
        # One registration per epoch is enough: Lightning keeps the metric objects and computes,
        # syncs and resets them at the epoch end; each further self.log costs ~0.4 ms of Python.
        if metrics.prefix not in self._registered_metrics:
            self._registered_metrics.add(metrics.prefix)
            for name, metric in metrics.items():
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name.endswith("_error"))
        if on_step:
            self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss, logits

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, self.train_metrics, on_step=True)
        if self.check_finite_loss and not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite training loss ({loss.item()}) at global step {self.global_step} (epoch "
                f"{self.current_epoch}, batch {batch_idx}); training stopped before this update. Checkpoints "
                "written before this step are intact. Lower the learning rate or check the input data."
            )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"loss", "logits"}`` of the batch (detached), for callbacks' ``on_validation_batch_end``."""
        loss, logits = self._step(batch, self.val_metrics, on_step=False)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``{"loss", "logits"}`` of the batch (detached).

        What ``ConfusionMatrixPlot`` reads in ``on_test_batch_end``.
        """
        loss, logits = self._step(batch, self.test_metrics, on_step=False)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``softmax(logits)``, shape ``(N, num_classes)`` (averaged over views, if any)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        logits = self.view_averaged_logits(x) if x.dim() == len(self.input_shape) + 2 else self(x)
        return torch.softmax(logits, dim=1)

    def view_averaged_logits(self, views: torch.Tensor) -> torch.Tensor:
        r"""Views of each input ``(N, V, *input_shape)`` ──► :math:`\log \frac1V \sum_v \mathrm{softmax}(f(x_v))`.

        Krizhevsky et al.'s ten-patch test (``StreamingImageDataModule(test_crops="ten")``, and
        for small images held in memory ``test_views="flip"`` or ``"ten"``): the
        softmax is averaged over the views, and its log returned as the logits, so that the loss
        is the cross-entropy of the averaged prediction and the argmax its class. The evaluation
        and predict steps call it for any batch with one dimension more than ``input_shape``.
        """
        n, v = views.shape[:2]
        log_p = torch.log_softmax(self(views.flatten(0, 1)), dim=1).view(n, v, -1)
        return torch.logsumexp(log_p, dim=1) - math.log(v)

    # ----------------------------------------------------------------- resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random state that dropout draws from, so a resumed run repeats the same masks.

        Also records the package version (``lightning_deepfeat_version``), so that a newer
        checkpoint read by an older install is refused with a message saying so.
        """
        checkpoint["lightning_deepfeat_version"] = __version__
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        device = self.device
        if device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(device)
        checkpoint["deepfeat_rng_state"] = state
        train_metrics = self._train_metric_checkpoint()
        if train_metrics is not None:
            checkpoint["deepfeat_train_metrics"] = train_metrics

    def _train_metric_checkpoint(self) -> dict[str, Any] | None:
        """The running states of the epoch-level training metrics, summed over processes, mid-epoch only.

        A run resumed mid-epoch then reports the same epoch ``train_*`` values as an
        uninterrupted one. The states are read inside ``Metric.sync_context()``, which
        under DDP reduces them over the processes as the metric itself does (a sum for
        ``MeanMetric`` and the error's confusion counts); a collective, like checkpointing.
        """
        trainer = self._attached_trainer()
        if trainer is None or not trainer.training:
            return None
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
        total = trainer.num_training_batches
        if not (done > 0 and (not isinstance(total, int) or done < total)):
            return None  # at an epoch boundary there is nothing to carry over
        states: dict[str, dict[str, torch.Tensor]] = {}
        for name, metric in self.train_metrics.items():
            with metric.sync_context():
                state = metric.metric_state
                tensors = {k: v.detach().clone().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}
            if len(tensors) != len(state):  # a list ("cat") state: not restorable by a sum
                return None
            states[name] = tensors
        return {"epoch": int(trainer.current_epoch), "batches": done, "states": states}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint's shapes; keep its random state for a resumed fit (applied at ``on_train_start``).

        Only a Trainer resuming ``fit`` from this checkpoint puts the random state back:
        ``load_from_checkpoint`` and ``test``/``predict(ckpt_path=...)`` leave the global RNG alone.
        """
        self._check_checkpoint_shapes(checkpoint)
        self._pending_train_metrics = checkpoint.get("deepfeat_train_metrics")
        trainer = self._attached_trainer()
        resuming = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        self._pending_rng_state = checkpoint.get("deepfeat_rng_state") if resuming else None

    def _check_checkpoint_shapes(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another ``num_classes`` with a message naming it (not a size-mismatch dump)."""
        # the head's rows, not the hyper-parameters: load_from_checkpoint(..., num_classes=k) overwrites those
        head = checkpoint.get("state_dict", {}).get("head.weight")
        if isinstance(head, torch.Tensor) and head.dim() == 2 and isinstance(self.head, nn.Linear):
            saved = int(head.shape[0])
        else:
            saved = checkpoint.get("hyper_parameters", {}).get("num_classes")
        if saved is not None and int(saved) != self.num_classes:
            raise ValueError(
                f"The checkpoint was trained with `num_classes`={saved}, but this {type(self).__name__} has "
                f"`num_classes`={self.num_classes}. Build the model with num_classes={saved} (the data module must "
                "match), or load only the features φ into a new model for another label set."
            )

    def setup(self, stage: str) -> None:
        """Check the data module's ``num_classes`` and ``image_shape`` against the model's, before any step.

        Each is checked when the data module declares it.
        """
        trainer = self._attached_trainer()
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        data_classes = _declared(check_int, "num_classes", data_classes, low=1)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} has `num_classes`={self.num_classes} but {type(datamodule).__name__} has "
                f"num_classes={data_classes}; pass num_classes={data_classes} to the model (the deepfeat CLI links it)."
            )
        data_shape = getattr(datamodule, "image_shape", None)
        shape = _declared(check_shape, "image_shape", data_shape)
        if shape is not None and shape != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} has `input_shape`={self.input_shape} but {type(datamodule).__name__} has "
                f"image_shape={shape}; pass input_shape={shape} to the model (the deepfeat CLI links it)."
            )

    @override
    def on_train_epoch_start(self) -> None:
        self._registered_metrics.discard(self.train_metrics.prefix)

    @override
    def on_validation_epoch_start(self) -> None:
        self._registered_metrics.discard(self.val_metrics.prefix)

    @override
    def on_test_epoch_start(self) -> None:
        self._registered_metrics.discard(self.test_metrics.prefix)

    @override
    def on_train_start(self) -> None:
        # after every restore (FSDP and DeepSpeed restore after on_fit_start) and after the sanity check, which
        # Lightning runs with its RNG isolated: the random state of the checkpoint being resumed, if any
        rng, self._pending_rng_state = getattr(self, "_pending_rng_state", None), None
        if rng:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        # after Lightning restored the loops: put back the running training metrics of a mid-epoch checkpoint
        saved, self._pending_train_metrics = getattr(self, "_pending_train_metrics", None), None
        if not saved:
            return
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if int(saved["epoch"]) != self.current_epoch or int(saved["batches"]) != progress:
            return
        metrics = dict(self.train_metrics.items())
        for name, states in saved["states"].items():
            metric = metrics[name]
            metric.reset()
            # the sums over processes go to rank 0; the others start from zero (their sum is the total)
            if self.global_rank == 0:
                metric.merge_state({key: value.to(self.device) for key, value in states.items()})

    def configure_optimizers(self) -> Any:
        """``optimizer(self.parameters())``, every group at ``lr`` when set, and ``lr_scheduler`` on it if given."""
        optimizer = self.optimizer_factory(self.parameters())
        lr = _check_lr(self.lr)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
