"""Verification accuracy on insightface ``.bin`` sets (LFW, CFP-FP, AgeDB-30), as the field reports it.

    >>> model, meta = resolve_embedder("runs/arcface-efficientnet/best.pt")
    >>> res = verify_bin(model, meta, "data/casia-webface/lfw.bin")
    >>> res.accuracy, res.accuracy_std, res.eer, res.roc_auc
    >>> targets = VerificationTargets(["lfw.bin", "agedb_30.bin"], image_size=112, normalization="arcface")
    >>> targets(model, "cuda")            # {'lfw_accuracy': 0.991, 'agedb_30_accuracy': 0.934}: once per epoch

Protocol (insightface recognition/arcface_torch/eval/verification.py, itself facenet's LFW helper):

1. every image and its horizontal mirror are embedded; the two embeddings are summed and L2-normalised (the
   "Accuracy-Flip" number). insightface sums the raw network outputs; fr_lib models return unit-length
   embeddings (fr_lib.embedders.resolve), so the sum here is of unit vectors (fr_lib.evaluation.embed with flip);
2. pair k is images 2k and 2k + 1; its score is their cosine similarity;
3. the pair list is cut into 10 contiguous folds in file order (sklearn ``KFold(10, shuffle=False)``: the first
   n_pairs % 10 folds get one extra pair); for each fold the threshold with the best accuracy on the other nine is
   applied to it; reported: the mean and std over folds (fr_lib.evaluation.metrics.lfw_10fold_accuracy);
4. plus EER and ROC-AUC over all pairs (fr_lib.evaluation.metrics.eer, roc_auc).

Where this differs from insightface: it searches the squared Euclidean distance d = 2 - 2 cos on the grid
``np.arange(0, 4, 0.01)`` (predict "same" when d < t), i.e. cosine thresholds 1 - t / 2 in steps of 0.005, and
keeps the first best grid point. Here the search is exact: every distinct score is a candidate threshold
(fr_lib.evaluation.metrics.best_accuracy), so the training-fold accuracy is never below the grid's. On the test
fold the two agree whenever no score of that fold falls between the two thresholds, and either may come out
higher: on 30 synthetic 6000-pair sets (LFW's size; ``python benchmarks/bin_threshold_grid.py``) the mean
accuracies differed by at most 0.0015 (mean difference -0.0001), below the std over folds that both report.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fr_lib.evaluation.pair_verification import PairsResult, score_pairs

N_FOLDS = 10
BIN_SUFFIX = ".bin"


@dataclass
class VerificationSet:
    """One decoded .bin set: images (2N, H, W, 3) uint8 RGB in pair order, issame (N,) bool."""
    name: str
    path: Path
    images: np.ndarray
    issame: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.issame)


def load_verification_set(path: str | os.PathLike, progress: bool = False) -> VerificationSet:
    """Read and decode a .bin (fr_lib.data.bin_sets.load_bin: no code from the file runs). The name is the file
    stem (lfw, cfp_fp, agedb_30). Raises FileNotFoundError, or ValueError naming the file (foreign pickle content,
    wrong structure, an image that does not decode)."""
    from fr_lib.data.bin_sets import decode_bin_images, load_bin
    from fr_lib.data.images import ImageLoadError

    path = Path(path)
    encoded, issame = load_bin(path)
    try:
        images = decode_bin_images(encoded, name=str(path), progress=progress)
    except ImageLoadError as e:   # '<path>[i]: reason'; a set with a bad image gives no comparable number
        raise ValueError(f"{e}; the set cannot be evaluated") from None
    return VerificationSet(path.stem, path, images, issame)


def bin_folds(n_pairs: int, n_folds: int = N_FOLDS) -> np.ndarray:
    """(n_pairs,) fold index of each pair: n_folds contiguous folds in pair order, the first n_pairs % n_folds one
    pair longer (sklearn.model_selection.KFold(n_folds, shuffle=False), as insightface uses)."""
    if n_pairs < n_folds:
        raise ValueError(f"{n_pairs} pairs cannot be split into {n_folds} folds")
    return np.concatenate([np.full(len(part), k) for k, part in enumerate(np.array_split(np.arange(n_pairs),
                                                                                           n_folds))])


def pair_cosines(embeddings: np.ndarray) -> np.ndarray:
    """(2N, D) unit embeddings in pair order -> (N,) float64 cosine similarity of rows 2k and 2k + 1."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2 or len(e) % 2:
        raise ValueError(f"embeddings must be (2N, D) in pair order, got shape {e.shape}")
    return np.einsum("kd,kd->k", e[0::2], e[1::2])


def score_bin(embeddings: np.ndarray, issame: Sequence[bool], n_folds: int = N_FOLDS) -> PairsResult:
    """10-fold accuracy (mean, std), EER and ROC-AUC from (2N, D) unit embeddings in pair order and (N,) flags."""
    scores = pair_cosines(embeddings)
    issame = np.asarray(issame, bool)
    if scores.shape != issame.shape:
        raise ValueError(f"{len(scores)} pairs of embeddings but {len(issame)} issame flags")
    return score_pairs(scores, issame, bin_folds(len(scores), n_folds))


class _BinImages:
    """Map-style dataset over a VerificationSet's pixels: ((3, H, W) uint8 tensor, 0); the float conversion happens
    batched on the device (_Preprocess)."""

    def __init__(self, vset: VerificationSet):
        import torch

        self.x = torch.from_numpy(vset.images).permute(0, 3, 1, 2)
        # extract_embeddings keys its cache on .samples; the file's fingerprint goes into the cache key
        self.samples = [(f"{vset.name}[{i}]", 0) for i in range(len(self.x))]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def _preprocess_module(model, image_size: int, normalization: str):
    """``model`` behind the eval transform done on whole batches on the device: uint8 (B, 3, H, W) -> [0, 1] ->
    resize to image_size (bilinear, antialiased; a no-op for 112 px sets at 112 px) -> (x - mean) / std.
    Hand-written instead of the per-image torchvision eval transform: that ran at ~370 images/s on one (shared)
    CPU thread, ~35 s per 12k-image set every epoch; this runs at ~950 images/s on the same thread, and on CUDA
    only uint8 bytes cross to the GPU and the float work runs there."""
    import torch
    from torch import nn

    from fr_lib.data.transforms import NORMALIZATIONS

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[normalization]

    class _Preprocess(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            m, sd = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
            # (x / 255 - mean) / std as one multiply-add on the uint8 values
            self.register_buffer("shift", -m / sd, persistent=False)
            self.register_buffer("scale", 1.0 / (255.0 * sd), persistent=False)
            self.train(model.training)   # extract_embeddings restores this mode on the wrapped model too

        def forward(self, x):
            x = x.float()
            if tuple(x.shape[-2:]) != (image_size, image_size):
                x = nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                              antialias=True, align_corners=False)
            return self.model(torch.addcmul(self.shift, x, self.scale))

    return _Preprocess()


def embed_verification_set(model, vset: VerificationSet, image_size: int, normalization: str, device="cpu",
                           batch_size: int = 64, flip: bool = True, cache_path=None, cache_key: str | None = None,
                           progress: bool = False) -> np.ndarray:
    """(2N, D) float32 unit embeddings of a set's images, each the normalised sum of the image's and its mirror's
    unit embeddings when ``flip`` (fr_lib.evaluation.embed.extract_embeddings; images resized to image_size and
    normalised with the model's ``normalization`` on the device). The model's train/eval mode is restored."""
    import torch

    from fr_lib.evaluation.embed import checkpoint_fingerprint, extract_embeddings

    loader = torch.utils.data.DataLoader(_BinImages(vset), batch_size=batch_size, shuffle=False,
                                         pin_memory=str(device).startswith("cuda"))
    key = None
    if cache_path is not None:
        key = f"{cache_key}|{normalization}@{int(image_size)}|{checkpoint_fingerprint(vset.path)}"
    return extract_embeddings(_preprocess_module(model, int(image_size), normalization), loader, device=str(device),
                              flip=flip, cache_path=cache_path, cache_key=key, progress=progress).embeddings


def verify_bin(model, meta: dict, bin_set: str | os.PathLike | VerificationSet, device: str = "cpu",
               batch_size: int = 64, flip: bool = True, cache_path=None, progress: bool = True) -> PairsResult:
    """10-fold accuracy, EER and ROC-AUC of ``model`` (resolve_embedder's (model, meta): image_size,
    normalization) on a .bin set (path or VerificationSet) by the protocol above."""
    vset = bin_set if isinstance(bin_set, VerificationSet) else load_verification_set(bin_set, progress=progress)
    emb = embed_verification_set(model, vset, meta["image_size"], meta["normalization"], device=device,
                                 batch_size=batch_size, flip=flip, cache_path=cache_path,
                                 cache_key=str(meta.get("checkpoint") or meta.get("name")), progress=progress)
    return score_bin(emb, vset.issame)


# ------------------------------------------------------------------------------------------- during training
def discover_val_targets(data_root: str | os.PathLike | None, val_targets: Iterable[str] = ()) -> list[Path]:
    """The .bin files a training run evaluates each epoch.

    ``val_targets`` given: each entry is a path (absolute, or relative to the working directory) or a name
    resolved as ``<data_root>/<name>.bin`` (arcface_torch's config.val_targets = ['lfw', 'cfp_fp', 'agedb_30']);
    a missing one raises FileNotFoundError. Empty: every ``*.bin`` in data_root when it is a training pack
    (fr_lib.data.pack.is_pack: holds train.rec / train.idx), sorted by name; none for a folder of photos."""
    root = Path(data_root) if data_root else None
    out = []
    for entry in (str(t).strip() for t in val_targets):
        if not entry:
            continue
        p = Path(entry)
        is_path = p.suffix == BIN_SUFFIX
        candidates = [p] if is_path else []
        if root is not None and not p.is_absolute():
            candidates.append(root / (p if is_path else f"{entry}{BIN_SUFFIX}"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"verification set {entry!r} not found (tried {', '.join(map(str, candidates))});"
                                    f" give a .bin path or the name of a .bin file in the data root")
        out.append(found)
    if not out and root is not None:
        from fr_lib.data.pack import is_pack

        if is_pack(root):
            out = sorted(root.glob(f"*{BIN_SUFFIX}"))
    return out


class VerificationTargets:
    """Per-epoch verification on .bin sets, like arcface_torch's CallBackVerification.

    The sets are decoded once (here); each call embeds them with flip (eval mode, no grad, the model's mode
    restored) and returns ``{'<name>_accuracy': 10-fold mean accuracy}``: columns of metrics.csv and the
    TensorBoard scalars ``epoch/<name>_accuracy``. Under torchrun build and call it on rank 0 only."""

    def __init__(self, paths: Iterable[str | os.PathLike], image_size: int, normalization: str,
                 batch_size: int = 64, flip: bool = True):
        self.sets = [load_verification_set(p) for p in paths]
        names = [s.name for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"val targets share a name: {names}")
        self.image_size, self.normalization = int(image_size), normalization
        self.batch_size, self.flip = batch_size, flip

    @classmethod
    def for_training(cls, data_cfg, train_cfg, normalization: str, load: bool = True) -> "VerificationTargets | None":
        """From a run's data config (root, image_size, batch_size) and train config (val_targets); None when there
        are no targets (a folder without val_targets) or ``load`` is False. Call it on every rank with
        load = (rank == 0): a missing target then fails on every rank alike, and only rank 0 decodes the sets."""
        paths = discover_val_targets(getattr(data_cfg, "root", None), getattr(train_cfg, "val_targets", ()) or ())
        if not paths or not load:
            return None
        return cls(paths, data_cfg.image_size, normalization, batch_size=data_cfg.batch_size)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sets]

    def __bool__(self) -> bool:
        return bool(self.sets)

    def __call__(self, model, device) -> dict[str, float]:
        out = {}
        for vset in self.sets:
            try:
                emb = embed_verification_set(model, vset, self.image_size, self.normalization, device=device,
                                             batch_size=self.batch_size, flip=self.flip)
                out[f"{vset.name}_accuracy"] = score_bin(emb, vset.issame).accuracy
            except ValueError as e:   # e.g. NaN embeddings of a diverging model: report, keep training
                print(f"verification on {vset.name} skipped: {e}")
                out[f"{vset.name}_accuracy"] = math.nan
        return out

    def summary(self, row: dict) -> str:
        """', lfw acc 0.9870, agedb_30 acc 0.9120' for the epoch summary line ('' without targets)."""
        return "".join(f", {n} acc {row.get(f'{n}_accuracy', math.nan):.4f}" for n in self.names)


# ------------------------------------------------------------------------------------------- comparison table
@dataclass
class BinEvaluation:
    """results: {model: {set name: PairsResult}}; skipped: {model: reason}; sources: {model: checkpoint or name};
    sets: {set name: {'path', 'n_pairs'}}."""
    results: dict
    skipped: dict
    sources: dict
    sets: dict


def evaluate_bin_sets(names: Sequence[str], bin_paths: Sequence[str | os.PathLike], resolve, device: str = "cpu",
                      batch_size: int = 64, cache_dir=None, progress: bool = True, log=print) -> BinEvaluation:
    """Every model of ``names`` (each turned into (model, meta) by ``resolve(name, device)``, e.g.
    fr_lib.embedders.resolve_embedder with the project's experiments) on every .bin of ``bin_paths``, by the
    protocol of this module (flip test on). Sets are decoded once. A model whose ``resolve`` raises ImportError or
    RuntimeError (an optional extra not installed, pretrained weights offline) is skipped with its reason.
    cache_dir: embeddings cached per (model, set) as <cache_dir>/<model>-<set>-bin.npz."""
    from fr_lib.io import safe_filename

    sets = [load_verification_set(p, progress=progress) for p in bin_paths]
    if len({s.name for s in sets}) != len(sets):
        raise ValueError(f"verification sets share a name: {[str(s.path) for s in sets]}")
    results, skipped, sources = {}, {}, {}
    for name in names:
        try:
            model, meta = resolve(name, device)
        except (ImportError, RuntimeError) as e:
            log(f"skipped {name}: {e}")
            skipped[name] = str(e)
            continue
        sources[name] = str(meta.get("checkpoint") or name)
        results[name] = {}
        for vset in sets:
            cache = None if cache_dir is None else Path(cache_dir) / f"{safe_filename(name)}-{vset.name}-bin.npz"
            res = verify_bin(model, meta, vset, device=device, batch_size=batch_size, cache_path=cache,
                             progress=progress)
            results[name][vset.name] = res
            log(f"{name} on {vset.name}: {res.n_pairs} pairs, 10-fold accuracy {res.accuracy:.4f} +- "
                f"{res.accuracy_std:.4f}, EER {res.eer:.4f}, ROC-AUC {res.roc_auc:.4f}")
    return BinEvaluation(results, skipped, sources,
                         {s.name: {"path": str(s.path), "n_pairs": s.n_pairs} for s in sets})


def bin_table(results: dict):
    """{model: {set: PairsResult}} -> DataFrame (rows = models, columns = set names, values = 10-fold accuracy in
    percent, the unit of the published tables: LFW 99.53 ...)."""
    from fr_lib.evaluation.report import comparison_table

    return comparison_table({m: {s: 100.0 * r.accuracy for s, r in per_set.items()} for m, per_set in results.items()})


def write_bin_report(out_dir, ev: BinEvaluation, stem: str = "bin_verification") -> dict:
    """<stem>.md / .csv / .html (fr_lib.evaluation.report.write_table: accuracy in %, best per column in bold, 2
    decimals) and <stem>.json ({'models': {model: {set: PairsResult fields, 'source'}}, 'skipped', 'sets',
    'protocol'}) under out_dir, atomically. Returns {format: path}."""
    from fr_lib.evaluation.report import write_table
    from fr_lib.io import write_json

    if not ev.results:
        raise ValueError(f"no model could be evaluated: {ev.skipped}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_table(bin_table(ev.results), out_dir, stem=stem, decimals=2)
    models = {m: {s: {**r.as_dict(), "source": ev.sources.get(m)} for s, r in per_set.items()}
              for m, per_set in ev.results.items()}
    paths["json"] = write_json(out_dir / f"{stem}.json", {
        "protocol": "insightface .bin: flip-summed L2-normalised embeddings, cosine similarity, 10 contiguous "
                    "folds, threshold of best accuracy on the other 9 (exact search); accuracy in [0, 1]",
        "models": models, "skipped": ev.skipped, "sets": ev.sets})
    return paths
