"""Evaluation metrics, pure numpy (torch optional for CUDA blocks). Cosine similarities throughout.

identification_rate: open-set TPR at FPR (docs/protocol.md), exact and chunked for 10^9+ negative pairs.
verification: tpr_at_fpr on given scores, ROC points and AUC, EER, best accuracy, LFW 10-fold accuracy.
"""
from fr_lib.evaluation.metrics.idrate import DEFAULT_FPRS, IDRateResult, identification_rate, l2_normalise
from fr_lib.evaluation.metrics.verification import (
    LFWPair,
    LFWResult,
    best_accuracy,
    eer,
    lfw_10fold_accuracy,
    read_lfw_pairs,
    roc_auc,
    roc_curve_points,
    tpr_at_fpr,
)

__all__ = ["DEFAULT_FPRS", "IDRateResult", "identification_rate", "l2_normalise", "tpr_at_fpr", "roc_curve_points",
           "roc_auc", "eer", "best_accuracy", "lfw_10fold_accuracy", "read_lfw_pairs",
           "LFWPair", "LFWResult"]
