"""The one held-out evaluation pipeline: models are compared on identities no training run saw.

    >>> split = held_out_split(cfg.data)                                  # query / distractor identities
    >>> ev = evaluate_models({"CE / EfficientNet": "runs/ce-efficientnet/last.pt"}, split,
    ...                      baselines={"random weights": "random-inception_resnet_v1@80"}, cache_dir="runs/.cache")
    >>> paths = write_report("id_rate/", ev.results, ev.embeddings, ev.notes, sources=ev.sources, split=split)

Used by ``fr demo``, ``fr recipe``, ``fr eval`` (ID-rate mode), id_rate/id_rate.ipynb, and by training
(fr_lib.training.data.build_training_data takes its split from ``held_out_split``, so the per-epoch open-set check
sees the very identities the final table is computed on).

Split: ``held_out_split(data_cfg)`` scans data_cfg.root with its filters and holds out
``eval_identity_fraction`` of the identities (fr_lib.data.open_set_split); of those, ``distractor_fraction`` become
distractor identities, the rest query identities. The training identities are split closed-set (``val_fraction``
of each identity's images) into train and val. Everything is deterministic by data_cfg.seed. Two configs hold out
the same identities exactly when ``split_differences`` finds nothing in SPLIT_KEYS.

Checkpoint: DEFAULT_CHECKPOINT = "last" is what ``fr demo``, ``fr recipe`` and id_rate.ipynb evaluate. The learning
rate follows warmup + cosine, so the last epoch is the end of the schedule, the model the recipe defines; best.pt is
picked by the closed-set val loss, which on small val sets is a poor selector for open-set ranking (triplet loss's
val loss is lowest in epoch 1 of the demo). ``fr eval NAME`` evaluates the run's best.pt, because that is the
checkpoint fr compare / fr serve / fr recognize load, and the threshold it writes (fr_lib.evaluation.thresholds)
must belong to the weights that use it; pass a checkpoint path to evaluate another one.

Eval transform: ``eval_transform(normalization, image_size)``: fr_lib.data.build_transforms(train=False) for
'imagenet' / 'facenet'; 'unit' (dlib-resnet: [0, 1] pixels, no mean/std) is built here.

results.json (written by write_report; ``SCHEMA``)::

    {"schema": "fr_lib.held_out/1",
     "models": {row name: {"tpr_at_fpr": {"<fpr>": TPR in [0, 1]}, "thresholds": {"<fpr>": cosine similarity},
                           "roc_auc": float, "roc_auc_max_error": float (0.0 when exact),
                           "n_positives": int, "n_negatives": int (pairs),
                           "n_query": int, "n_distractors": int (images),
                           "n_query_identities": int, "n_distractor_identities": int,
                           "source": str (checkpoint path or embedder name), "kind": "checkpoint" | "random" |
                           "pretrained" | "embeddings", "image_size": int px or null,
                           "intervals": fr_lib.evaluation.bootstrap.BootstrapResult.to_json() (95% identity-level
                                        bootstrap: {"intervals": {"<column>": [low, high]}, ...}) or null}},
     "skipped": {row name: reason},       # rows that could not be evaluated here (not installed, offline, ...)
     "notes": {key: text},               # e.g. "evaluated checkpoint", per-baseline input size
     "split": {"root", "query_identities", "query_images", "distractor_identities", "distractor_images",
               "train_identities", "train_images", "val_images"} or {},
     "training": {row name: training summary} or {}}

FPR keys are formatted with ``f"{fpr:g}"`` ("0.5", "0.001", "1e-05").
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from fr_lib.io import atomic_write, safe_filename, save_figure, write_json

FPRS = (0.5, 0.25, 0.1, 0.05, 0.01, 0.005, 0.001)   # the published table's columns
DEFAULT_CHECKPOINT = "last"                          # see the module docstring for why
CHECKPOINT_FILES = {"last": "last.pt", "best": "best.pt"}
SCHEMA = "fr_lib.held_out/1"
SKIPPED = "skipped: "                                # prefix of a skipped row's note
# data settings that decide which identities are held out and which images train / validate
SPLIT_KEYS = ("root", "min_images_per_identity", "max_images_per_identity", "max_identities",
              "eval_identity_fraction", "distractor_fraction", "val_fraction", "seed")
_SPLIT_DEFAULTS = {"min_images_per_identity": 1, "max_images_per_identity": None, "max_identities": None,
                   "val_fraction": 0.0}


# ------------------------------------------------------------------------------------------------ split
def _get(cfg, key: str):
    """A field of a DataConfig-like object or of its dict form (a checkpoint's config['data'])."""
    if isinstance(cfg, Mapping):
        if key in cfg:
            return cfg[key]
    elif hasattr(cfg, key):
        return getattr(cfg, key)
    if key in _SPLIT_DEFAULTS:
        return _SPLIT_DEFAULTS[key]
    raise ValueError(f"data config lacks {key!r}; expected the fields of config.DataConfig")


def split_differences(reference, other, ignore=()) -> list[str]:
    """['key: reference value -> other value'] for every SPLIT_KEYS field (minus ``ignore``) in which two data
    configs (DataConfig-like objects or dicts) differ; empty when they hold out the same identities."""
    return [f"{k}: {_get(reference, k)!r} -> {_get(other, k)!r}" for k in SPLIT_KEYS
            if k not in ignore and _get(reference, k) != _get(other, k)]


@dataclass
class HeldOutSplit:
    """The identity-disjoint split of one dataset. Samples are [(path relative to the index root, label)].

    ``train`` / ``val``: closed-set split of the training identities (labels 0..C-1, names ``train_classes``);
    ``query`` / ``distractors``: held-out identities (labels are identity ids, disjoint between the two sets).
    ``distractor_index``: the index the distractor paths are relative to when it is not ``index`` (folder_split).
    ``data``: the data settings it was made from ({SPLIT_KEYS field: value}), None for folder_split."""
    index: object                      # fr_lib.data.FolderIndex
    train_classes: list[str]
    train: list
    val: list
    query: list
    distractors: list
    query_classes: list[str]
    distractor_classes: list[str]
    data: dict | None = None
    distractor_index: object = None

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    @property
    def held_out_classes(self) -> list[str]:
        return sorted(self.query_classes + self.distractor_classes)

    def describe(self) -> dict:
        """Counts for reports and results.json['split']."""
        return {"root": str(self.index.root), "query_identities": len(self.query_classes),
                "query_images": len(self.query), "distractor_identities": len(self.distractor_classes),
                "distractor_images": len(self.distractors), "train_identities": len(self.train_classes),
                "train_images": self.n_train, "val_images": self.n_val}


def held_out_split(data_cfg, root=None) -> HeldOutSplit:
    """The split of a DataConfig (or its dict form) that training uses: scan ``root`` (default data_cfg.root) with
    its filters, hold out identities (fr_lib.data.open_set_split), split the rest closed-set
    (fr_lib.data.closed_set_split). May hold no query identity (training then skips its open-set check;
    embed_held_out refuses it)."""
    from fr_lib.data import closed_set_split, open_set_split, scan_folder

    data = {k: _get(data_cfg, k) for k in SPLIT_KEYS}
    if root is not None:
        data["root"] = str(root)
    index = scan_folder(data["root"], min_images_per_identity=data["min_images_per_identity"],
                        max_images_per_identity=data["max_images_per_identity"],
                        max_identities=data["max_identities"])
    split = open_set_split(index, data["eval_identity_fraction"], data["distractor_fraction"], data["seed"])
    train, val = closed_set_split(split.train, data["val_fraction"], data["seed"])
    return HeldOutSplit(index, split.train_classes, train, val, split.query, split.distractors,
                        split.query_classes, split.distractor_classes, data)


def folder_split(query_root, distractor_root) -> HeldOutSplit:
    """Every image under ``query_root`` is a query, every image under ``distractor_root`` a distractor (two
    ROOT/<identity>/<image> folders with no identity in common). Distractor labels are shifted past the query
    labels so the two sets never share an identity id."""
    from fr_lib.data import scan_folder

    q, d = scan_folder(query_root), scan_folder(distractor_root)
    shared = sorted(set(q.classes) & set(d.classes))
    if shared:
        raise ValueError(f"--query and --distractors share identities {shared[:5]}: distractors must be other "
                         f"people")
    offset = len(q.classes)
    return HeldOutSplit(q, [], [], [], list(q.samples), [(p, lab + offset) for p, lab in d.samples],
                        list(q.classes), list(d.classes), None, distractor_index=d)


# ------------------------------------------------------------------------------------------------ embeddings
def eval_transform(normalization: str, image_size: int):
    """The evaluation transform of a model's ``normalization`` at ``image_size`` px (see the module docstring)."""
    from fr_lib.data import NORMALIZATIONS, build_transforms

    if normalization in NORMALIZATIONS:
        return build_transforms(normalization, image_size, train=False)
    if normalization != "unit":
        raise ValueError(f"unknown normalization {normalization!r}; expected {sorted(NORMALIZATIONS) + ['unit']}")
    import torch
    from torchvision.transforms import v2

    # build_transforms has no 'unit' normalization (only dlib's ResNet wants raw [0, 1] pixels)
    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True)])


@dataclass
class HeldOutEmbeddings:
    """Embeddings of the held-out sets: query (Nq, D) and distractors (Nd, D) float32 unit rows; query_labels (Nq,)
    and distractor_labels (Nd,) int64 identity ids (distractor ids kept for identity-level resampling)."""
    query: np.ndarray
    query_labels: np.ndarray
    distractors: np.ndarray
    distractor_labels: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, query_labels, distractors): the arguments of identification_rate and of the plots."""
        return self.query, self.query_labels, self.distractors

    @classmethod
    def from_npz(cls, path) -> "HeldOutEmbeddings":
        """From an .npz with arrays embeddings (N, D), labels (N,), is_distractor (N,) bool."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"embeddings file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("embeddings", "labels", "is_distractor") if k not in z]
            if missing:
                raise ValueError(f"{path} lacks array(s) {missing}; expected embeddings (N, D), labels (N,), "
                                 f"is_distractor (N,) bool; found {sorted(z.files)}")
            emb, labels, is_d = z["embeddings"], z["labels"], z["is_distractor"].astype(bool)
        if emb.ndim != 2 or labels.shape != (len(emb),) or is_d.shape != (len(emb),):
            raise ValueError(f"{path}: shapes disagree: embeddings {emb.shape}, labels {labels.shape}, "
                             f"is_distractor {is_d.shape}")
        return cls(emb[~is_d], labels[~is_d], emb[is_d], labels[is_d])


def embed_samples(model, meta: dict, index, samples, device: str = "cpu", image_size: int | None = None,
                  batch_size: int = 64, flip: bool = False, cache_path=None, progress: bool = True):
    """fr_lib.evaluation.embed.Embeddings ((N, D) unit rows, labels, paths) of ``samples`` [(path relative to
    index.root, label)] under ``model`` with the eval transform of meta['normalization'] at ``image_size`` px
    (default meta['image_size']). Cached at cache_path (keyed by weights, data, flip and size) when given.
    Unreadable images are replaced by another of the same identity (FaceFolder) and counted on stderr."""
    from fr_lib.data import FaceFolder
    from fr_lib.evaluation.embed import extract_embeddings

    size = int(image_size or meta["image_size"])
    ds = FaceFolder(index, transform=eval_transform(meta["normalization"], size), samples=samples)
    emb = extract_embeddings(model, ds, device=device, flip=flip, batch_size=batch_size, cache_path=cache_path,
                             cache_key=f"{meta['normalization']}@{size}", progress=progress)
    if ds.load_errors:
        print(f"warning: {meta.get('name', 'model')}: {len(ds.load_errors)} unreadable image(s) replaced by "
              f"another image of the same identity, e.g. {ds.load_errors[0]}", file=sys.stderr)
    return emb


def embed_held_out(model, meta: dict, split: HeldOutSplit, device: str = "cpu", image_size: int | None = None,
                   batch_size: int = 64, flip: bool = False, cache_dir=None, cache_name: str | None = None,
                   progress: bool = True) -> HeldOutEmbeddings:
    """Embed the query and distractor images of ``split`` with ``model`` (images -> (B, D); embed_samples).

    meta: resolve_embedder's meta ('normalization', 'image_size' px; ``image_size`` overrides it). flip: average
    each embedding with its mirror's. With cache_dir and cache_name, embeddings are cached under
    cache_dir/<cache_name>-{query,distractors}[-flip].npz."""
    if not split.query:
        raise ValueError(f"no held-out query identities under {split.index.root}: lower the identity filter, raise "
                         f"eval_identity_fraction, or add identities with 2+ images")
    parts = {}
    for kind, samples, index in (("query", split.query, split.index),
                                 ("distractors", split.distractors, split.distractor_index or split.index)):
        cache = (Path(cache_dir) / f"{safe_filename(cache_name)}-{kind}{'-flip' if flip else ''}.npz"
                 if cache_dir and cache_name else None)
        parts[kind] = (embed_samples(model, meta, index, samples, device=device, image_size=image_size,
                                     batch_size=batch_size, flip=flip, cache_path=cache, progress=progress)
                       if samples else None)
    q, d = parts["query"], parts["distractors"]
    if d is None:
        return HeldOutEmbeddings(q.embeddings, q.labels, np.zeros((0, q.embeddings.shape[1]), np.float32),
                                 np.zeros(0, np.int64))
    return HeldOutEmbeddings(q.embeddings, q.labels, d.embeddings, d.labels)


def embed_held_out_native(model, meta: dict, split: HeldOutSplit, raw_root, device: str = "cpu",
                          batch_size: int = 64, progress: bool = True):
    """A pretrained baseline's held-out embeddings from the SOURCE photos of the split's aligned crops, with the
    baseline's own preprocessing (fr_lib.embedders.native.embed_photos; images whose source photo is missing or
    where its detector finds no face use the crop). Returns (HeldOutEmbeddings, fallbacks [(rel path, reason)])."""
    from fr_lib.embedders.native import embed_photos

    parts, fallbacks = {}, []
    for kind, samples, index in (("query", split.query, split.index),
                                 ("distractors", split.distractors, split.distractor_index or split.index)):
        rels = [rel for rel, _ in samples]
        labels = np.asarray([label for _, label in samples], np.int64)

        def crop_embed(paths, index=index):
            return embed_samples(model, meta, index, [(r, 0) for r in paths], device=device, batch_size=batch_size,
                                 progress=False).embeddings

        res = embed_photos(model, meta, rels, index.root, raw_root, crop_embed, device=device, progress=progress)
        parts[kind] = (res.embeddings, labels)
        fallbacks += res.fallbacks
    (q, ql), (d, dl) = parts["query"], parts["distractors"]
    return HeldOutEmbeddings(q, ql, d.reshape(len(d), -1) if len(d) else np.zeros((0, q.shape[1]), np.float32),
                             dl), fallbacks


# ------------------------------------------------------------------------------------------------ models
def run_checkpoint(run_dir, which: str = DEFAULT_CHECKPOINT) -> Path:
    """run_dir/last.pt or run_dir/best.pt."""
    if which not in CHECKPOINT_FILES:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINT_FILES)}, got {which!r}")
    return Path(run_dir) / CHECKPOINT_FILES[which]


@dataclass
class Evaluation:
    """What evaluate_models computed. results: {row: fr_lib.evaluation.metrics.IDRateResult}; embeddings: {row:
    HeldOutEmbeddings}; sources: {row: {'source', 'kind', 'image_size'}}; notes: {row: text}, where a row that
    could not be evaluated has the note 'skipped: <reason>' (see ``skipped``)."""
    results: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    @property
    def skipped(self) -> dict:
        """{row: reason} of the rows that could not be evaluated."""
        return skipped_rows(self.notes)


def skipped_rows(notes: dict) -> dict:
    """{row: reason} of the notes that say 'skipped: <reason>'."""
    return {k: v[len(SKIPPED):] for k, v in notes.items() if isinstance(v, str) and v.startswith(SKIPPED)}


def _resolve(source, device: str):
    from fr_lib.embedders import resolve   # looked up per call: tests replace resolve_embedder

    return resolve.resolve_embedder(source, device=device)


def evaluate_models(sources: Mapping, split: HeldOutSplit | None, baselines: Mapping | None = None,
                    device: str = "cpu", fprs=FPRS, cache_dir=None, batch_size: int = 64, flip: bool = False,
                    resolve: Callable | None = None, per_model: Callable | None = None,
                    metric_device: str = "cpu", chunk_size: int | None = 1 << 20,
                    log: Callable[[str], None] | None = None, progress: bool = True,
                    raw_root=None) -> Evaluation:
    """Embed ``split``'s held-out images with every model and compute the ID-rate protocol
    (fr_lib.evaluation.metrics.identification_rate, docs/protocol.md) at ``fprs``.

    sources / baselines: {row name: source}; a source is anything ``resolve(source, device) -> (model, meta)``
        accepts (default fr_lib.embedders.resolve.resolve_embedder: checkpoint paths, random-<backbone>[@px],
        facenet-*, dlib-resnet), a (model, meta) pair, or precomputed HeldOutEmbeddings (then ``split`` may be
        None). Baselines are listed after the sources and get a note with their kind and input size.
    A model that cannot be built here (ImportError: optional extra missing; RuntimeError: weights offline) and a
    checkpoint trained on another split (split_differences, ignoring the root: the same data may live elsewhere)
    become skipped rows with the reason in ``notes``; bad input (ValueError, FileNotFoundError) raises.
    per_model(name, model, meta): called after a model is embedded (e.g. to score a pairs file with it).
    Embeddings are cached under cache_dir/<row name>-*.npz when cache_dir is given. ``log`` gets one line per row.
    raw_root: the folder the split's crops were aligned from (fr align's SRC). A pretrained baseline that declares
    a native preprocessing (fr_lib.embedders.native: dlib-resnet, facenet-*) is then embedded from the source
    photos the way it was trained; without raw_root it runs on the crops, and its note says so.
    """
    from fr_lib.embedders.native import CROPS_NOTE, native_preprocessing
    from fr_lib.evaluation.metrics import identification_rate

    resolve = resolve or _resolve
    say = log or (lambda _msg: None)
    ev = Evaluation()
    jobs = [(n, s, False) for n, s in sources.items()] + [(n, s, True) for n, s in (baselines or {}).items()]
    for name, source, is_baseline in jobs:
        model, native_note = None, None
        if isinstance(source, HeldOutEmbeddings):
            emb, meta = source, {"kind": "embeddings", "image_size": None, "source": None}
        else:
            try:
                model, meta = source if isinstance(source, tuple) else resolve(source, device)
            except (ImportError, RuntimeError) as e:
                ev.notes[name] = SKIPPED + str(e).splitlines()[0]
                say(f"{name}: {ev.notes[name]}")
                continue
            trained_on = (meta.get("config") or {}).get("data")
            if trained_on and split is not None and split.data is not None:
                differ = split_differences(split.data, trained_on, ignore=("root",))
                if differ:
                    ev.notes[name] = (f"{SKIPPED}trained with another split ({'; '.join(differ)}); its training "
                                      f"identities may be among these held-out ones")
                    say(f"{name}: {ev.notes[name]}")
                    continue
            if split is None:
                raise ValueError(f"{name}: a model source needs a held-out split to embed")
            native = native_preprocessing(meta.get("name") or str(source))
            if native and raw_root is not None:
                emb, fallbacks = embed_held_out_native(model, {**meta, "name": meta.get("name") or str(source)},
                                                       split, raw_root, device=device, batch_size=batch_size,
                                                       progress=progress)
                n_images = len(emb.query) + len(emb.distractors)
                native_note = f"input: {native}" + (f"; {len(fallbacks)} of {n_images} images used the crop "
                                                    f"(e.g. {fallbacks[0][0]}: {fallbacks[0][1]})"
                                                    if fallbacks else "")
            else:
                emb = embed_held_out(model, {**meta, "name": name}, split, device=device, batch_size=batch_size,
                                     flip=flip, cache_dir=cache_dir, cache_name=name if cache_dir else None,
                                     progress=progress)
                native_note = f"input: {CROPS_NOTE}" if native else None
            if per_model is not None:
                per_model(name, model, meta)
        try:
            r = identification_rate(*emb.as_tuple(), fprs=fprs, chunk_size=chunk_size, device=metric_device,
                                    progress=progress)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
        ev.results[name], ev.embeddings[name] = r, emb
        src = (None if isinstance(source, HeldOutEmbeddings)
               else meta.get("checkpoint") or (meta.get("name") if isinstance(source, tuple) else source))
        ev.sources[name] = {"source": None if src is None else str(src), "kind": meta.get("kind"),
                            "image_size": meta.get("image_size")}
        if is_baseline:
            ev.notes[name] = (f"{meta.get('kind')} baseline at {meta.get('image_size')} px"
                              if not (model is not None and native_note) else f"{meta.get('kind')} baseline")
        if model is not None and native_note:
            ev.notes[name] = "; ".join(filter(None, [ev.notes.get(name), native_note]))
        elif ((meta.get("config") or {}).get("loss") or {}).get("name") == "bce":
            ev.notes[name] = ("scored by cosine similarity of the embeddings, not the pair-classifier head "
                              "(that one scores pairs: fr compare / fr eval --pairs --score pair-probability)")
        tprs = dict(zip(np.asarray(r.fprs, float).tolist(), r.tprs))
        say(f"{name}: {len(emb.query)} query / {len(emb.distractors)} distractor images, {r.n_positives} positive "
            f"and {r.n_negatives} negative pairs, ROC-AUC {r.roc_auc:.4f}"
            + (f", TPR@FPR=0.01 {tprs[0.01]:.3f}" if 0.01 in tprs else ""))
        del model
    return ev


def select_fprs(result, fprs):
    """The IDRateResult restricted to ``fprs`` (a subset of result.fprs, in that order): e.g. computed with the
    threshold file's FPR added, reported without it."""
    have = [float(f) for f in result.fprs]
    keep = [have.index(float(f)) for f in fprs]
    return type(result)(**{**result.__dict__, "fprs": result.fprs[keep], "thresholds": result.thresholds[keep],
                           "tprs": result.tprs[keep], "ranks": result.ranks[keep]})


# ------------------------------------------------------------------------------------------------ report
def results_json(results: dict, embeddings: dict, notes: dict | None = None, training: dict | None = None,
                 sources: dict | None = None, split: HeldOutSplit | None = None) -> dict:
    """The results.json document (schema in the module docstring)."""
    notes = dict(notes or {})
    models = {}
    for name, r in results.items():
        e = embeddings[name]
        models[name] = {"tpr_at_fpr": {f"{f:g}": float(t) for f, t in zip(r.fprs, r.tprs)},
                        "thresholds": {f"{f:g}": float(t) for f, t in zip(r.fprs, r.thresholds)},
                        "roc_auc": float(r.roc_auc), "roc_auc_max_error": float(r.roc_auc_max_error),
                        "n_positives": int(r.n_positives), "n_negatives": int(r.n_negatives),
                        "n_query": int(len(e.query)), "n_distractors": int(len(e.distractors)),
                        "n_query_identities": int(len(np.unique(e.query_labels))),
                        "n_distractor_identities": int(len(np.unique(e.distractor_labels))),
                        **{"source": None, "kind": None, "image_size": None, **(sources or {}).get(name, {})}}
    return {"schema": SCHEMA, "models": models, "skipped": skipped_rows(notes), "notes": notes,
            "split": split.describe() if split is not None else {}, "training": training or {}}


def write_report(out_dir, results: dict, embeddings: dict, notes: dict | None = None, training: dict | None = None,
                 sources: dict | None = None, split: HeldOutSplit | None = None,
                 title: str = "ROC on held-out identities (ID-rate protocol)", bootstrap: int = 200,
                 seed: int = 0) -> dict:
    """Write into out_dir: table.md / .csv / .html (rows = evaluated models, TPR@FPR columns + ROC-AUC, best of
    each column in bold), results.json (module docstring), roc_curves.png (every model, linear and log FPR) and
    similarity_distributions.png. results: {row: IDRateResult}; embeddings: {row: HeldOutEmbeddings}. The only
    place the held-out artefacts are built. Returns {artefact file name: path}.

    bootstrap: resamples of the identity-level bootstrap (fr_lib.evaluation.bootstrap, seeded by ``seed``) whose
    95% intervals go into the tables (``0.343 [0.29, 0.40]``, CSV _lo/_hi), the ROC bands and results.json
    (each model's "intervals"); 0 = none."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg" and "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")   # headless runs; a notebook keeps its inline backend

    from fr_lib.evaluation.plots import plot_roc, plot_similarity_distributions
    from fr_lib.evaluation.report import comparison_table, write_table

    if not results:
        raise ValueError(f"no model could be evaluated (notes: {notes})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from fr_lib.evaluation.bootstrap import bootstrap_intervals

    intervals, no_interval = (bootstrap_intervals(results, embeddings, bootstrap, seed) if bootstrap else ({}, {}))
    paths = {f"table.{k}": v for k, v in write_table(comparison_table(results, intervals), out).items()}
    inputs = {name: note.split("input: ", 1)[1] for name, note in (notes or {}).items()
              if name in results and isinstance(note, str) and "input: " in note}
    if inputs:   # which preprocessing each pretrained baseline got (fr_lib.embedders.native), under the table
        md = paths["table.md"].read_text(encoding="utf-8")
        atomic_write(paths["table.md"], md + "\n" + "".join(f"- {name}: {text}\n" for name, text in inputs.items()))
    no_interval = {f"{name} (intervals)": why for name, why in no_interval.items()}   # beside the row's own note
    doc = results_json(results, embeddings, {**(notes or {}), **no_interval}, training, sources, split)
    for name, row in doc["models"].items():
        row["intervals"] = intervals[name].to_json() if name in intervals else None
    paths["results.json"] = write_json(out / "results.json", doc)
    tuples = {name: e.as_tuple() for name, e in embeddings.items()}
    for fig, name in ((plot_roc(results, title=title, intervals=intervals), "roc_curves.png"),
                      (plot_similarity_distributions(tuples), "similarity_distributions.png")):
        paths[name] = save_figure(fig, out / name, dpi=110)
    return paths
