"""``ConvexHeadRefit``: freeze φ, solve the head's convex problem to tolerance, compare with SGD's head."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_deepfeat.inspection import split_batches
from lightning_deepfeat.validation import check_bool, check_choice, check_int, check_number

Split = Literal["train", "val"]


@dataclass
class RefitResult:
    """Outcome of one refit: objective of SGD's head and of the optimum, and what was kept."""

    epoch: int
    sgd_loss: float
    refit_loss: float
    grad_norm: float
    iterations: int
    kept: str  # "refit" or "sgd"

    @property
    def gap(self) -> float:
        """``sgd_loss − refit_loss`` (≥ 0 up to the tolerance)."""
        return self.sgd_loss - self.refit_loss


def head_objective(
    A: torch.Tensor, b: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, l2: float
) -> torch.Tensor:
    r"""L2-regularised multinomial logistic loss, convex in (A, b).

    .. math::
        F(A, b) = \frac1N\sum_{i=1}^N -\log\mathrm{softmax}_{y_i}(A φ_i + b) + \frac{λ}{2}\lVert A\rVert_F^2

    (the bias is not penalised).
    """
    return F.cross_entropy(F.linear(features, A, b), labels) + 0.5 * l2 * A.pow(2).sum()


def solve_logistic_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    l2: float = 1e-4,
    tol: float = 1e-5,
    max_iter: int = 1000,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    r"""Minimise :func:`head_objective` with L-BFGS (strong-Wolfe line search) until ‖∇F‖₂ ≤ ``tol``.

    Starts from ``init`` (e.g. SGD's head) or zeros; runs in float64 for an accurate
    tolerance. Returns ``(A, b, grad_norm, iterations)`` with ``grad_norm`` the final
    Euclidean norm of ∇F over (A, b).
    """
    feats = features.detach().double()
    d = feats.shape[1]
    if init is None:
        A = torch.zeros(num_classes, d, dtype=torch.float64)
        b = torch.zeros(num_classes, dtype=torch.float64)
    else:
        A, b = (t.detach().double().clone() for t in init)
    A.requires_grad_(True)
    b.requires_grad_(True)
    # L-BFGS stops on the max-norm of the gradient; ‖g‖₂ ≤ √n‖g‖_∞, so this guarantees ‖g‖₂ ≤ tol
    inf_tol = tol / math.sqrt(A.numel() + b.numel())
    opt = torch.optim.LBFGS(
        [A, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=inf_tol,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = head_objective(A, b, feats, labels, l2)
        loss.backward()
        return loss

    iterations = 0
    for _ in range(10):  # L-BFGS may stop early on a flat line search; restart a few times
        opt.step(closure)
        iterations = opt.state[opt.param_groups[0]["params"][0]].get("n_iter", iterations)
        closure()  # fresh gradients at the current point
        assert A.grad is not None and b.grad is not None  # set by the closure
        grad_norm = torch.cat([A.grad.flatten(), b.grad.flatten()]).norm().item()
        if grad_norm <= tol:
            break
    return A.detach(), b.detach(), grad_norm, int(iterations)


class ConvexHeadRefit(Callback):
    r"""Freeze φ and solve the head's convex problem to tolerance; report SGD's head against the optimum.

    On the training split (eval mode: no dropout, no augmentation) compute φ_i =
    ``extract_features(x_i)`` once, then minimise :func:`head_objective` over the head
    (A, b) with L-BFGS until ‖∇F‖₂ ≤ ``tol``. The head SGD found is evaluated on the
    same F, so ``sgd_loss − refit_loss`` is how far SGD's head is from the optimum on its
    own features. Logged: ``head_sgd_loss``, ``head_refit_loss``, ``head_refit_gap``,
    ``head_refit_grad_norm``; one line is reported (``rank_zero_info``).

    Args:
        every_n_epochs: also refit at the end of every N-th training epoch (``None``:
            only at the end of fit).
        l2: λ ≥ 0 of the objective. The default matches weight decay 5e-4 in spirit
            (SGD's weight decay adds λ/2‖A‖² with λ = weight_decay).
        tol: gradient-norm tolerance of L-BFGS.
        max_iter: L-BFGS iterations per restart.
        keep_better: copy the refit head into the model when its objective is lower.
        split: ``"train"`` (default) or ``"val"``: the data the head is fitted on.
        verbose: report the result line.
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        l2: float = 5e-4,
        tol: float = 1e-5,
        max_iter: int = 500,
        keep_better: bool = False,
        split: Split = "train",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.every_n_epochs = check_int(
            "every_n_epochs", every_n_epochs, low=1, allow_none=True, hint="None: only at the end of fit"
        )
        self.l2 = check_number("l2", l2, low=0, hint="the λ of λ/2‖A‖²")
        self.tol = check_number("tol", tol, low=0, low_open=True, hint="gradient-norm tolerance")
        self.max_iter = check_int("max_iter", max_iter, low=1, hint="L-BFGS iterations per restart")
        self.keep_better = check_bool("keep_better", keep_better)
        self.split: Split = check_choice("split", split, Split)
        self.verbose = check_bool("verbose", verbose)
        self.results: list[RefitResult] = []

    @torch.no_grad()
    def features_of(self, pl_module: LightningModule, datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(φ(x), y)`` of the whole split, with the module in eval mode."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            feats, labels = [], []
            for x, y in split_batches(datamodule, self.split, device=pl_module.device):
                feats.append(cast(Any, pl_module).extract_features(x).float().cpu())
                labels.append(y.cpu())
        finally:
            pl_module.train(was_training)
        return torch.cat(feats), torch.cat(labels)

    def refit(self, pl_module: LightningModule, datamodule: Any, epoch: int = -1) -> RefitResult:
        """Run one refit on ``pl_module`` (whose ``head`` must be an ``nn.Linear``)."""
        head = pl_module.head
        if not isinstance(head, nn.Linear) or head.bias is None:
            raise ValueError(f"ConvexHeadRefit needs `head` to be an nn.Linear with bias, got {type(head).__name__}.")
        feats, labels = self.features_of(pl_module, datamodule)
        A0, b0 = head.weight.detach().cpu().double(), head.bias.detach().cpu().double()
        sgd_loss = head_objective(A0, b0, feats.double(), labels, self.l2).item()
        A, b, grad_norm, iterations = solve_logistic_head(
            feats,
            labels,
            int(cast(Any, pl_module).num_classes) if hasattr(pl_module, "num_classes") else head.out_features,
            l2=self.l2,
            tol=self.tol,
            max_iter=self.max_iter,
            init=(A0, b0),
        )
        refit_loss = head_objective(A, b, feats.double(), labels, self.l2).item()
        kept = "sgd"
        if self.keep_better and refit_loss < sgd_loss:
            with torch.no_grad():
                head.weight.copy_(A.to(head.weight))
                head.bias.copy_(b.to(head.bias))
            kept = "refit"
        result = RefitResult(epoch, sgd_loss, refit_loss, grad_norm, iterations, kept)
        self.results.append(result)
        return result

    def _report(self, trainer: Trainer, pl_module: LightningModule, result: RefitResult, log: bool) -> None:
        if log:
            for key, value in (
                ("head_sgd_loss", result.sgd_loss),
                ("head_refit_loss", result.refit_loss),
                ("head_refit_gap", result.gap),
                ("head_refit_grad_norm", result.grad_norm),
            ):
                pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False)
        elif trainer.logger is not None:
            trainer.logger.log_metrics(
                {"head_sgd_loss": result.sgd_loss, "head_refit_loss": result.refit_loss, "head_refit_gap": result.gap},
                step=trainer.global_step,
            )
        if self.verbose:
            rank_zero_info(
                f"ConvexHeadRefit (epoch {result.epoch}): SGD head F={result.sgd_loss:.6f}, "
                f"optimum F={result.refit_loss:.6f} (gap {result.gap:.2e}, ‖∇F‖={result.grad_norm:.1e}, "
                f"{result.iterations} L-BFGS iterations, kept {result.kept})"
            )

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            result = self.refit(pl_module, getattr(trainer, "datamodule", None), epoch=trainer.current_epoch)
            self._report(trainer, pl_module, result, log=True)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        last = trainer.current_epoch - 1
        if self.results and self.results[-1].epoch == last:
            return
        result = self.refit(pl_module, getattr(trainer, "datamodule", None), epoch=last)
        self._report(trainer, pl_module, result, log=False)
