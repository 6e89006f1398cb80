"""Downstream saliency predictor: contextual prioritisation over a tuned VLM's semantic proposals.

Reads exported proposals (JSONL + PNG masks) and human fixations (AiR, OSIE, SALICON and MIT1003 layouts), trains
:class:`ExplainableSaliencyPredictor`, and scores its maps with the standard saliency metrics. Each
prediction names the proposals it kept and their weights; :func:`deletion_curve` checks that those
explanations are faithful.
"""

from .backbone import RESNET_LAYOUTS, DilatedResNet, load_backbone_weights
from .config import PredictorDataConfig, PredictorModelConfig, PredictorTrainingConfig
from .dataset import FixationDataset, collate
from .evaluation import METRICS, Prediction, centre_bias_map, explain, predict, score_maps
from .faithfulness import DeletionCurve, deletion_curve
from .fixations import (
    FIXATION_FORMATS,
    FixationRecord,
    density_map,
    fixation_map,
    read_air_fixations,
    read_fixations,
    read_mit1003_fixations,
    read_osie_fixations,
    read_salicon_fixations,
)
from .loss import saliency_loss
from .metrics import auc_judd, auc_shuffled, cc, kld, nss, sim
from .model import ExplainableSaliencyPredictor, PredictorOutput
from .proposals import ExportRecord, Proposal, read_export, write_export
from .trainer import PredictorTrainer, load_predictor, topk_for_epoch

__all__ = [
    "FIXATION_FORMATS",
    "METRICS",
    "RESNET_LAYOUTS",
    "DeletionCurve",
    "DilatedResNet",
    "ExplainableSaliencyPredictor",
    "ExportRecord",
    "FixationDataset",
    "FixationRecord",
    "Prediction",
    "PredictorDataConfig",
    "PredictorModelConfig",
    "PredictorOutput",
    "PredictorTrainer",
    "PredictorTrainingConfig",
    "Proposal",
    "auc_judd",
    "auc_shuffled",
    "cc",
    "centre_bias_map",
    "collate",
    "deletion_curve",
    "density_map",
    "explain",
    "fixation_map",
    "kld",
    "load_backbone_weights",
    "load_predictor",
    "nss",
    "predict",
    "read_air_fixations",
    "read_export",
    "read_fixations",
    "read_mit1003_fixations",
    "read_osie_fixations",
    "read_salicon_fixations",
    "saliency_loss",
    "score_maps",
    "sim",
    "topk_for_epoch",
    "write_export",
]
