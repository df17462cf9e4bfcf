"""Paths, typed frozen experiment configs and the EXPERIMENTS registry.

Notebooks and the ``fr`` CLI import this module; ``fr_lib`` never does (it takes these dataclasses or plain
arguments). Nothing runs at import time beyond building the registry.

    >>> cfg = get_experiment("arcface-efficientnet", **{"train.epochs": 3})
    >>> cfg.loss.margin, cfg.loss.scale, cfg.train.epochs
    (0.5, 64.0, 3)

A preset is a set of dotted overrides applied on top of an experiment: ``full`` is the published CASIA-WebFace
recipe (GPU), ``demo`` the CPU-sized run of ``make demo`` on the synthetic dataset, ``small`` real photos at small
scale (``fr recipe``: ~100 identities on a CPU), ``tiny`` what the tests use.
A preset may add per-experiment overrides (DEMO_OVERRIDES). ``fr train --set key=value`` goes through
parse_overrides, which converts values to the field's type.

Two-stage recipe (train.init_from + train.freeze_backbone): train a CE model first, then fine-tune only the neck
(and the new loss's weights) with triplet or ArcFace:

    >>> stage2 = get_experiment("arcface-efficientnet", **{"train.init_from": "runs/ce-efficientnet/best.pt",
    ...                                                     "train.freeze_backbone": True})
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------------- paths
ROOT = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("FR_DATA_DIR", ROOT / "data"))
RUNS_DIR = Path(os.environ.get("FR_RUNS_DIR", ROOT / "runs"))
ID_RATE_DIR = ROOT / "id_rate"
SYNTH_ROOT = DATA_DIR / "synth-demo"            # the embedded default dataset (`fr data synth`)
CASIA_ROOT = DATA_DIR / "casia-webface"         # the unzipped Kaggle pack: train.rec/.idx, property, *.bin


# ---------------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DataConfig:
    root: str = str(SYNTH_ROOT)
    image_size: int = 112                   # side of the square crop fed to the backbone, px
    min_images_per_identity: int = 1        # identity filter (the seed used >=75 and >=50)
    max_identities: int | None = None       # optional cap on training identities (after the filter)
    max_images_per_identity: int | None = None
    eval_identity_fraction: float = 0.2     # open-set: identities held out of training entirely
    distractor_fraction: float = 0.5        # of the held-out identities, the share used as distractors
    val_fraction: float = 0.1               # closed-set: per-identity stratified share of training images
    batch_size: int = 64                    # per process: under torchrun the global batch is world_size x this
    samples_per_class: int = 0              # K of a P x K identity-balanced batch; 0 = plain shuffling
    num_workers: int = 2
    packed_cache: bool = False              # decode once into a memory-mapped uint8 array (fr_lib.data.PackedFaces)
    cache_dir: str | None = None            # where packed caches go; None = fr_lib.data.default_cache_dir()/packed
    augment: bool = True
    batch_augment: bool = False             # augment + normalise whole uint8 batches on the training device
                                            # (fr_lib.data.BatchAugment, kornia): workers only read pixels
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet_b0"       # any timm name, "inception_resnet_v1", "iresnet50", "mobilefacenet"
    embedding_size: int = 512
    pretrained: str | None = None           # None | "imagenet" (timm) | "vggface2" | "casia-webface" | a file
    dropout: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    name: str = "ce"                        # ce | arcface | cosface | triplet | contrastive | bce | group
    margin: float | None = None             # None = the loss's default; arcface: radians, cosface: cosine
    scale: float | None = None              # logit scale s of arcface / cosface (64); ce: multiplies the unit
                                            # embeddings before the linear classifier (1)
    label_smoothing: float = 0.0            # ce only
    mining: str = "batch_hard"              # triplet: batch_hard | semi_hard | all


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adamw"                # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9                   # sgd only
    scheduler: str = "cosine"               # cosine | step | plateau | none
    warmup_epochs: float = 0.0
    step_size: int = 10                     # step scheduler, epochs
    gamma: float = 0.1                      # step and plateau: lr multiplier
    plateau_patience: int = 2               # plateau: epochs without val-loss improvement before lowering lr
    grad_clip: float | None = 5.0           # max global grad norm; None = off


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    device: str = "auto"                    # auto | cpu | cuda | cuda:N
    amp: str = "bf16"                       # bf16 | fp16 | none; applied on CUDA only
    channels_last: bool = True              # CUDA only
    compile: bool = False
    early_stopping_patience: int | None = None
    log_every: int = 50                     # steps between TensorBoard scalars
    open_set_fpr: float = 0.01              # per-epoch quick ID-rate check on held-out identities
    freeze_backbone: bool = False           # two-stage recipe: fine-tune only the neck (+ loss weights)
    init_from: str | None = None            # checkpoint to start the two-stage recipe from
    eval_at_start: bool = False             # also evaluate the untrained model (history row "epoch 0")
    # insightface .bin verification sets evaluated each epoch (names resolve to <data.root>/<name>.bin, or paths);
    # () = every *.bin beside a training pack (a data.root holding train.rec), none for a folder
    val_targets: tuple[str, ...] = ()
    output_dir: str | None = None           # None = runs/<name> (config.RUNS_DIR)
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir) if self.train.output_dir else RUNS_DIR / self.name

    @property
    def checkpoint(self) -> Path:
        """Best checkpoint (min val loss); 'last.pt' beside it is the resume point."""
        return self.output_dir / "best.pt"

    def replace(self, **overrides: Any) -> "ExperimentConfig":
        """Dotted overrides, e.g. ``cfg.replace(**{"train.epochs": 3, "data.root": "x"})``; a typo raises."""
        return apply_overrides(self, overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        sections = {f.name: f.type for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            if k not in sections:
                raise KeyError(f"unknown config key {k!r}; expected one of {sorted(sections)}")
            sub = _SECTION_TYPES.get(k)
            kw[k] = sub(**v) if sub else v
        return cls(**kw)


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig,
                  "train": TrainConfig}


def apply_overrides(cfg, overrides: dict[str, Any]):
    """Return a copy of a (nested) frozen dataclass with dotted keys replaced; unknown keys raise KeyError."""
    for key, value in overrides.items():
        cfg = _replace_path(cfg, key.split("."), value, key)
    return cfg


def _replace_path(obj, path: list[str], value, full_key: str):
    names = {f.name for f in fields(obj)}
    head = path[0]
    if head not in names:
        raise KeyError(f"unknown config key {full_key!r}: {type(obj).__name__} has {sorted(names)}")
    if len(path) == 1:
        return dataclasses.replace(obj, **{head: value})
    child = getattr(obj, head)
    if not is_dataclass(child):
        raise KeyError(f"config key {full_key!r}: {head!r} is not a section")
    return dataclasses.replace(obj, **{head: _replace_path(child, path[1:], value, full_key)})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.01", "model.pretrained=None"]`` -> dotted overrides with values converted to each field's
    declared type (int, float, bool, str, or None for optional fields); unknown keys or bad values raise."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        out[key.strip()] = _convert(key.strip(), text.strip())
    return out


def _field_type(key: str) -> str:
    cls, parts = ExperimentConfig, key.split(".")
    for i, part in enumerate(parts):
        by_name = {f.name: f for f in fields(cls)}
        if part not in by_name:
            raise KeyError(f"unknown config key {key!r}: {cls.__name__} has {sorted(by_name)}")
        ftype = by_name[part].type
        if i < len(parts) - 1:
            if part not in _SECTION_TYPES:
                raise KeyError(f"config key {key!r}: {part!r} is not a section")
            cls = _SECTION_TYPES[part]
    return ftype


def _convert(key: str, text: str):
    kinds = [t.strip() for t in _field_type(key).split("|")]
    if "None" in kinds and text.lower() in ("none", "null", ""):
        return None
    for kind in kinds:
        try:
            if kind == "bool":
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if kind in ("int", "float", "str"):
                return {"int": int, "float": float, "str": str}[kind](text)
            if kind == "tuple[str, ...]":   # comma-separated, e.g. train.val_targets=lfw,cfp_fp
                return tuple(x.strip() for x in text.split(",") if x.strip())
        except ValueError:
            continue
    raise ValueError(f"config key {key!r} expects {' | '.join(kinds)}, got {text!r}")


# ---------------------------------------------------------------------------------------------------- registry
def _casia(min_images: int) -> DataConfig:
    # packed cache + on-device batch augmentation: per-image transforms in 8 workers would starve a GPU
    # (benchmarks/input_pipeline.py)
    return DataConfig(root=str(CASIA_ROOT), min_images_per_identity=min_images, batch_size=128, num_workers=8,
                      packed_cache=True, batch_augment=True)


EXPERIMENTS: dict[str, ExperimentConfig] = {
    cfg.name: cfg
    for cfg in [
        ExperimentConfig(
            name="ce-efficientnet",
            description="Cross-entropy / EfficientNet-B0 on CASIA-WebFace identities with >=75 images (1292)",
            data=_casia(75), model=ModelConfig("efficientnet_b0"), loss=LossConfig("ce", label_smoothing=0.1),
            optim=OptimConfig("adamw", lr=1e-3, warmup_epochs=1), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="ce-inceptionresnetv1-1292",
            description="Cross-entropy / InceptionResnetV1 on identities with >=75 images (1292 classes)",
            data=dataclasses.replace(_casia(75), image_size=160),
            model=ModelConfig("inception_resnet_v1"), loss=LossConfig("ce", label_smoothing=0.1),
            optim=OptimConfig("adamw", lr=1e-3, warmup_epochs=1), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="ce-inceptionresnetv1-822",
            description="Cross-entropy / InceptionResnetV1 on identities with >=50 images (822 classes in the seed)",
            data=dataclasses.replace(_casia(50), image_size=160),
            model=ModelConfig("inception_resnet_v1"), loss=LossConfig("ce", label_smoothing=0.1),
            optim=OptimConfig("adamw", lr=1e-3, warmup_epochs=1), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="triplet-efficientnet",
            description="Triplet (batch-hard) / EfficientNet-B0 with P x K batches",
            data=dataclasses.replace(_casia(75), samples_per_class=4),
            model=ModelConfig("efficientnet_b0"), loss=LossConfig("triplet", margin=0.2, mining="batch_hard"),
            optim=OptimConfig("adamw", lr=3e-4, warmup_epochs=1), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="arcface-efficientnet",
            description="ArcFace (s=64, m=0.5 rad) / EfficientNet-B0",
            data=_casia(75), model=ModelConfig("efficientnet_b0"), loss=LossConfig("arcface", margin=0.5, scale=64.0),
            optim=OptimConfig("sgd", lr=0.1, weight_decay=5e-4, warmup_epochs=2), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="bce-efficientnet",
            description="Learned pair classifier (siamese |e1 - e2| -> linear -> sigmoid, balanced BCE) / "
                        "EfficientNet-B0 with P x K batches",
            data=dataclasses.replace(_casia(75), samples_per_class=4),
            model=ModelConfig("efficientnet_b0"), loss=LossConfig("bce"),
            optim=OptimConfig("adamw", lr=3e-4, warmup_epochs=1), train=TrainConfig(epochs=30)),
        ExperimentConfig(
            name="group-efficientnet",
            description="Group loss (Elezi et al. 2020) / EfficientNet-B0, n=24 classes x m=2 samples per batch",
            data=dataclasses.replace(_casia(75), batch_size=48, samples_per_class=2),
            model=ModelConfig("efficientnet_b0"), loss=LossConfig("group", scale=16.0),
            optim=OptimConfig("adamw", lr=3e-4, warmup_epochs=1), train=TrainConfig(epochs=30)),
        # The field's CASIA-WebFace recipe (ArcFace paper, Deng et al. 2019: all 10,575 identities at 112 px,
        # SGD 0.1 / momentum 0.9 / weight decay 5e-4, 32K iterations at batch 512 = ~33 epochs with the lr / 10 at
        # 20K and 28K; here cosine decay over 32 epochs). data.batch_size is per process: 128 x 4 GPUs = 512.
        # Published (LFW / CFP-FP / AgeDB-30): ArcFace ResNet-50 99.53 / 95.56 / 95.15, CosFace 99.51 / 95.44 /
        # 94.56; MobileFaceNet ArcFace LFW 99.28, AgeDB-30 93.05.
        ExperimentConfig(
            name="arcface-iresnet50",
            description="ArcFace (s=64, m=0.5 rad) / IResNet-50 on all CASIA-WebFace identities (ArcFace paper row)",
            data=_casia(1), model=ModelConfig("iresnet50"), loss=LossConfig("arcface", margin=0.5, scale=64.0),
            optim=OptimConfig("sgd", lr=0.1, weight_decay=5e-4, warmup_epochs=1), train=TrainConfig(epochs=32)),
        ExperimentConfig(
            name="cosface-iresnet50",
            description="CosFace (s=64, m=0.35) / IResNet-50 on all CASIA-WebFace identities",
            data=_casia(1), model=ModelConfig("iresnet50"), loss=LossConfig("cosface", margin=0.35, scale=64.0),
            optim=OptimConfig("sgd", lr=0.1, weight_decay=5e-4, warmup_epochs=1), train=TrainConfig(epochs=32)),
        ExperimentConfig(
            name="arcface-mobilefacenet",
            description="ArcFace (s=64, m=0.5 rad) / MobileFaceNet on all CASIA-WebFace identities",
            data=_casia(1), model=ModelConfig("mobilefacenet"), loss=LossConfig("arcface", margin=0.5, scale=64.0),
            optim=OptimConfig("sgd", lr=0.1, weight_decay=5e-4, warmup_epochs=1), train=TrainConfig(epochs=32)),
    ]
}

# Dotted overrides applied on top of any experiment.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    # CPU-sized run on the synthetic set (`fr data synth`: 200 identities x 30 images); tuned so that the four
    # demo rows train in minutes on 2 cores and beat random weights clearly (see DEMO_OVERRIDES)
    "demo": {"data.root": str(SYNTH_ROOT), "data.packed_cache": False, "data.batch_size": 32, "data.num_workers": 0,
             "data.min_images_per_identity": 1, "data.max_identities": 120, "data.max_images_per_identity": 10,
             "data.val_fraction": 0.2, "data.eval_identity_fraction": 0.3, "data.image_size": 64, "train.epochs": 14,
             "loss.label_smoothing": 0.0, "train.eval_at_start": True, "data.batch_augment": False},
    "tiny": {"data.batch_size": 16, "data.num_workers": 0, "data.min_images_per_identity": 1,
             "data.packed_cache": False, "data.batch_augment": False, "model.embedding_size": 64, "train.epochs": 1},
}

# Per-experiment additions to a preset (applied after PRESETS[preset]). Short CPU runs from scratch need a
# larger CE/ArcFace logit scale and AdamW: ArcFace's s=64, m=0.5 rad with SGD does not get off the ground in a
# few hundred steps; InceptionResnetV1 needs >= 80 px. How these values were chosen (a sweep of the preset, what
# lost): docs/results.md, "The demo table".
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "ce-efficientnet": {"loss.scale": 16.0, "optim.lr": 3e-3},
    "ce-inceptionresnetv1-1292": {"data.image_size": 80, "loss.scale": 16.0, "optim.lr": 3e-3, "train.epochs": 6},
    "ce-inceptionresnetv1-822": {"data.image_size": 80, "loss.scale": 16.0, "optim.lr": 3e-3, "train.epochs": 6},
    # P x K = 16 identities x 4 images per batch (batch 64; 8 x 4 at batch 32 left a flat curve) for 36 epochs:
    # triplet loss keeps improving long after CE has converged (docs/results.md, "The triplet row")
    "triplet-efficientnet": {"loss.mining": "all", "loss.margin": 0.1, "optim.lr": 3e-3, "data.batch_size": 64,
                             "train.epochs": 36},
    "arcface-efficientnet": {"loss.scale": 16.0, "loss.margin": 0.2, "optim.optimizer": "adamw",
                             "optim.lr": 3e-3, "optim.warmup_epochs": 1.0, "train.epochs": 18},
    "bce-efficientnet": {"data.samples_per_class": 4, "optim.lr": 3e-3, "train.epochs": 18},
    "group-efficientnet": {"data.batch_size": 48, "data.samples_per_class": 2, "optim.lr": 3e-3,
                           "train.epochs": 14},
}

# Real photos at small scale (`fr recipe`, `--preset small`): a few hundred identities x ~20 aligned photos trained
# from scratch on a CPU for up to an hour. The CASIA defaults (SGD 0.1, ArcFace s=64 / m=0.5) do not get off the
# ground in a few hundred steps and AdamW 3e-3 diverges on real faces: docs/results.md, "What training on real faces
# taught us"; the 299-identity CelebA recipe these defaults come from is in docs/results.md too.
PRESETS["small"] = {
    "data.min_images_per_identity": 2,   # a held-out query identity needs pairs; tiny identities add nothing
    "data.eval_identity_fraction": 0.2,  # 120 identities -> 96 train, 12 query, 12 distractor identities
    "data.distractor_fraction": 0.5,
    "data.val_fraction": 0.1,
    "data.image_size": 96,               # 112 px aligned crops seen at 96 px: ~1.4x the epochs per CPU minute
                                         # of 112 px (benchmarks/train_step.py); the CelebA recipe's size
    "data.batch_size": 32,
    "data.num_workers": 1,               # decode/augment overlaps the CPU step
    "data.packed_cache": False,          # a few thousand small JPEGs decode fast enough
    "data.batch_augment": False,         # per-image augmentation in the loader worker keeps up on a CPU
    "loss.label_smoothing": 0.0,
    "train.epochs": 40,
}
_SMALL_LOSS = {
    "ce": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "loss.scale": 16.0},
    "arcface": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "loss.scale": 16.0,
                "loss.margin": 0.2},
    "cosface": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "loss.scale": 16.0,
                "loss.margin": 0.2},
    "triplet": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "loss.mining": "all",
                "loss.margin": 0.1, "data.samples_per_class": 4},
    "bce": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "data.samples_per_class": 4},
    "group": {"optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "data.batch_size": 48,
              "data.samples_per_class": 2},
}
SMALL_OVERRIDES: dict[str, dict[str, Any]] = {name: _SMALL_LOSS.get(cfg.loss.name, {})
                                              for name, cfg in EXPERIMENTS.items()}
PRESET_EXPERIMENT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {"demo": DEMO_OVERRIDES,
                                                                      "small": SMALL_OVERRIDES}


def get_experiment(name: str, preset: str = "full", **overrides: Any) -> ExperimentConfig:
    """The registered experiment ``name`` with a preset's overrides, that preset's per-experiment overrides
    (e.g. DEMO_OVERRIDES) and then the caller's dotted overrides applied, in that order."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = apply_overrides(EXPERIMENTS[name], PRESETS[preset])
    cfg = apply_overrides(cfg, PRESET_EXPERIMENT_OVERRIDES.get(preset, {}).get(name, {}))
    return apply_overrides(cfg, overrides)
