"""LFW-style verification of any embedding model on a pairs file: 10-fold accuracy, EER and ROC-AUC.

    >>> model, meta = resolve_embedder("dlib-resnet")
    >>> res = verify_pairs(model, meta, "pairs.txt", "aligned/")
    >>> res.accuracy, res.accuracy_std, res.eer, res.roc_auc

The pairs file is LFW View 2 format (fr_lib.data.lfw_pairs: written by write_lfw_pairs, resolved by read_lfw_pairs, so LFW's
own file names and our sorted-position names both work). Each distinct image is embedded once; a pair's score is
the cosine similarity of its two embeddings; the 10-fold accuracy uses the file's folds (threshold chosen on the
other nine folds, fr_lib.evaluation.metrics.lfw_10fold_accuracy).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fr_lib.evaluation.held_out import eval_transform   # the one eval transform (also imported from here)


@dataclass
class PairsResult:
    """accuracy / accuracy_std: mean and std over folds of the 10-fold verification accuracy; eer in [0, 1] and
    eer_threshold (cosine similarity); roc_auc over all pairs; n_pairs, n_matched, n_folds."""
    accuracy: float
    accuracy_std: float
    eer: float
    eer_threshold: float
    roc_auc: float
    n_pairs: int
    n_matched: int
    n_folds: int

    def as_dict(self) -> dict:
        return asdict(self)

    def table_row(self) -> dict:
        """Columns of a verification table (fr_lib.evaluation.report.comparison_table accepts dicts)."""
        return {"10-fold accuracy": self.accuracy, "accuracy std": self.accuracy_std, "EER": self.eer,
                "ROC-AUC": self.roc_auc}


def embed_paths(model, meta: dict, paths, device: str = "cpu", batch_size: int = 64, flip: bool = False,
                cache_path: str | os.PathLike | None = None, progress: bool = True) -> np.ndarray:
    """(N, D) float32 unit embeddings of image files (absolute paths, any folders) under ``model`` with ``meta``'s
    image_size and normalization. Raises ValueError when an image cannot be read."""
    from fr_lib.data import FaceFolder, FolderIndex
    from fr_lib.evaluation.embed import extract_embeddings

    paths = [str(p) for p in paths]
    root = Path(os.path.commonpath(paths))
    if root.is_file():
        root = root.parent
    rel = [Path(p).relative_to(root).as_posix() for p in paths]
    index = FolderIndex(root=root, samples=[(r, 0) for r in rel], classes=["pairs"], skipped=[])
    dataset = FaceFolder(index, eval_transform(meta["normalization"], int(meta["image_size"])))
    emb = extract_embeddings(model, dataset, device=device, flip=flip, batch_size=batch_size,
                             cache_path=cache_path, cache_key=str(meta.get("checkpoint") or meta.get("name")),
                             progress=progress).embeddings
    if dataset.load_errors:
        raise ValueError(f"{len(dataset.load_errors)} pair image(s) could not be read, e.g. {dataset.load_errors[0]}")
    return emb


def pair_scores(model, meta: dict, pairs, device: str = "cpu", batch_size: int = 64, flip: bool = False,
                cache_path: str | os.PathLike | None = None, progress: bool = True, raw_root=None,
                native_info: dict | None = None, score=None) -> np.ndarray:
    """Cosine similarity (n_pairs,) float64 of each LFWPair (absolute path1, path2) under ``model``, or
    ``score(a, b)`` of the two (n_pairs, D) float64 embedding matrices row by row when given (e.g. the pair
    classifier's probability, fr_lib.losses.pair_classifier.PairClassifierLoss.pair_probability).

    meta: resolve_embedder's meta (image_size, normalization). Distinct images are embedded once. ``raw_root``: the
    folder the aligned pair images were aligned from; a pretrained baseline with a native preprocessing
    (fr_lib.embedders.native) is then embedded from the source photos (``native_info``, when given, receives
    'preprocessing' and the 'fallbacks' that used the crop)."""
    from fr_lib.embedders.native import embed_photos, native_preprocessing

    paths = sorted({p for pair in pairs for p in (pair.path1, pair.path2)})
    if not paths:
        raise ValueError("no pairs to score")
    if raw_root is not None and native_preprocessing(meta.get("name", "")):
        root = Path(paths[0]).parents[1]          # pair images are <aligned root>/<identity>/<file>
        if any(Path(p).parents[1] != root for p in paths):
            raise ValueError(f"native preprocessing needs every pair image in one aligned folder "
                             f"<root>/<identity>/<file>; got images outside {root}")
        rel = [Path(p).relative_to(root).as_posix() for p in paths]
        by_rel = dict(zip(rel, paths))
        native = embed_photos(model, meta, rel, root, raw_root, device=device, progress=progress,
                              crop_embed=lambda rels: embed_paths(model, meta, [by_rel[r] for r in rels],
                                                                  device, batch_size, progress=False))
        emb = native.embeddings
        if native_info is not None:
            native_info.update(preprocessing=native.preprocessing, fallbacks=native.fallbacks)
    else:
        emb = embed_paths(model, meta, paths, device, batch_size, flip, cache_path, progress)
    row = {p: i for i, p in enumerate(paths)}
    a = emb[[row[pair.path1] for pair in pairs]].astype(np.float64)
    b = emb[[row[pair.path2] for pair in pairs]].astype(np.float64)
    if score is not None:
        return np.asarray(score(a, b), np.float64)
    return np.einsum("kd,kd->k", a, b)


def score_pairs(scores, issame, folds) -> PairsResult:
    """PairsResult from scores (n,), issame (n,) bool, folds (n,) int (one fold index per pair)."""
    from fr_lib.evaluation.metrics import eer, lfw_10fold_accuracy, roc_auc

    scores, issame, folds = np.asarray(scores, np.float64), np.asarray(issame, bool), np.asarray(folds)
    acc = lfw_10fold_accuracy(scores, issame, folds=folds)
    rate, thr = eer(scores[issame], scores[~issame])
    return PairsResult(accuracy=acc.mean, accuracy_std=acc.std, eer=rate, eer_threshold=thr,
                       roc_auc=roc_auc(scores[issame], scores[~issame]), n_pairs=len(scores),
                       n_matched=int(issame.sum()), n_folds=len(np.unique(folds)))


def verify_pairs(model, meta: dict, pairs_txt, root, device: str = "cpu", batch_size: int = 64, flip: bool = False,
                 cache_path=None, progress: bool = True, score=None, raw_root=None,
                 native_info: dict | None = None) -> PairsResult:
    """10-fold accuracy, EER and ROC-AUC of ``model`` on an LFW View-2 pairs file whose names resolve under root;
    ``score``, ``raw_root`` and ``native_info`` as in pair_scores (default: cosine similarity of crop
    embeddings)."""
    from fr_lib.data.lfw_pairs import read_lfw_pairs

    pairs = read_lfw_pairs(pairs_txt, root)
    scores = pair_scores(model, meta, pairs, device=device, batch_size=batch_size, flip=flip,
                         cache_path=cache_path, progress=progress, score=score, raw_root=raw_root,
                         native_info=native_info)
    return score_pairs(scores, [p.issame for p in pairs], [p.fold for p in pairs])


def verification_markdown(df, decimals: int = 4) -> str:
    """Markdown table of verification results, the best of each column in bold: highest accuracy and ROC-AUC,
    lowest EER (fr_lib.evaluation.report.to_markdown bolds the highest everywhere, wrong for an error rate)."""
    lower_better = {"EER", "accuracy std"}
    header = [df.index.name or "model"] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {c: (df[c].min() if c in lower_better else df[c].max()) for c in df.columns}
    for name, row in df.iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            text = "" if v != v else f"{v:.{decimals}f}"
            cells.append(f"**{text}**" if text and c != "accuracy std" and v == best[c] else text)
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines) + "\n"
