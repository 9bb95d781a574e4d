"""Probes for the open questions.

Layer-wise training, alternating minimisation, convex head refit, dropout schedules.
"""

from lightning_deepfeat.probes._layers import parameter_layers, select_parameters
from lightning_deepfeat.probes.ablation import ABLATION_ARMS, ablate, ablate_main, build_arm, format_ablation_table
from lightning_deepfeat.probes.alternating import AlternatingMinimization
from lightning_deepfeat.probes.convex_head import ConvexHeadRefit, RefitResult, head_objective, solve_logistic_head
from lightning_deepfeat.probes.dropout_schedule import DropoutSchedule
from lightning_deepfeat.probes.layerwise import LayerwiseRun, format_table, layerwise_probe, write_layerwise_outputs
from lightning_deepfeat.probes.train_only import TrainOnly

__all__ = [
    "ABLATION_ARMS",
    "AlternatingMinimization",
    "ConvexHeadRefit",
    "DropoutSchedule",
    "LayerwiseRun",
    "RefitResult",
    "TrainOnly",
    "ablate",
    "ablate_main",
    "build_arm",
    "format_ablation_table",
    "format_table",
    "head_objective",
    "layerwise_probe",
    "parameter_layers",
    "select_parameters",
    "solve_logistic_head",
    "write_layerwise_outputs",
]
