r"""``PredictionWriter``: write class predictions to a CSV file, one row per sample, as they are made."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from typing_extensions import override

from lightning_deepfeat.validation import check_path, fail


class PredictionWriter(BasePredictionWriter):
    r"""Write what ``predict_step`` returns for a classifier, one CSV row per sample.

    Each prediction of ``predict_step`` must be a tensor of shape ``(N, K)``: one row of
    class scores per sample (:class:`~lightning_deepfeat.FeatureClassifier` returns the
    probabilities :math:`p(y = k \mid x) = \mathrm{softmax}_k(\text{logits})`). The columns are

    ``index``
        the sample's position in the prediction split: the sampler's index when the loader
        reports it, else the running position, with process ``r`` of ``W`` holding positions
        ``r, r + W, r + 2W, …`` (how our loaders and ``DistributedSampler`` share an
        unshuffled split);
    ``predicted``
        :math:`\arg\max_k p_k`;
    ``class_name``
        the data module's ``class_names[predicted]`` (only when it has ``class_names``);
    ``p_0 … p_{K-1}``
        the row itself.

    Rows are written batch by batch (nothing accumulates in memory). With several
    processes each writes its own file, ``<stem>-rank<r>.csv``. The path is printed at the
    end of ``predict`` and kept in :attr:`paths`.

    Args:
        output: the CSV file; ``None`` writes ``predictions.csv`` into the trainer's
            ``log_dir`` (the run's log folder).
        float_format: how probabilities are written (default ``"{:.6g}"``).

    Example::

        trainer = Trainer(callbacks=[PredictionWriter("out/predictions.csv")])
        trainer.predict(model, datamodule=dm, return_predictions=False)
    """

    def __init__(self, output: str | os.PathLike[str] | None = None, float_format: str = "{:.6g}") -> None:
        super().__init__(write_interval="batch")
        self.output: Path | None = check_path(
            "output", output, kind="file", allow_none=True, hint="None: predictions.csv in the run's log folder"
        )
        try:
            float_format.format(0.5)
        except (AttributeError, ValueError, IndexError, KeyError) as err:
            raise fail("float_format", "a format string of one number", float_format, hint="such as '{:.6g}'") from err
        self.float_format = float_format
        self.paths: list[Path] = []
        self._file: Any = None
        self._writer: Any = None
        self._position = 0

    def _path(self, trainer: Trainer) -> Path:
        path = (
            self.output
            if self.output is not None
            else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.csv"
        )
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}-rank{trainer.global_rank}{path.suffix}")
        return path

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._writer = None
        self._position = 0
        self.paths = [path]

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, torch.Tensor) or prediction.dim() != 2:
            shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else type(prediction).__name__
            raise ValueError(
                f"PredictionWriter needs predict_step to return one row of class scores per sample, shape (N, K); "
                f"got {shape}."
            )
        scores = prediction.detach().float().cpu()
        n, k = scores.shape
        # a public attribute that Lightning's data connector sets; the Trainer class does not declare it
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        names = getattr(datamodule, "class_names", None) if datamodule is not None else None
        if self._writer is None:
            self._writer = csv.writer(self._file)
            header = ["index", "predicted"] + (["class_name"] if names else []) + [f"p_{j}" for j in range(k)]
            self._writer.writerow(header)
        if batch_indices is not None and len(batch_indices) == n:
            indices = [int(i) for i in batch_indices]
        else:
            world, rank = trainer.world_size, trainer.global_rank
            indices = [rank + world * (self._position + j) for j in range(n)]
        self._position += n
        predicted = scores.argmax(dim=1).tolist()
        fmt = self.float_format.format
        for index, label, row in zip(indices, predicted, scores.tolist(), strict=True):
            name = [names[label] if label < len(names) else ""] if names else []
            self._writer.writerow([index, label, *name, *(fmt(v) for v in row)])

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        rank_zero_info(f"deepfeat: wrote the predictions to {self.paths[0]}")

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._file is not None:  # keep what was written readable
            self._file.close()
            self._file = None


__all__ = ["PredictionWriter"]
