"""The one place that turns a name into an embedding model: ``resolve_embedder(name) -> (model, meta)``.

Names (``embedder_choices()`` lists them):

- ``dlib-resnet``: dlib's pretrained ResNet descriptor (offline; needs ``pip install 'fr_lib[dlib]'``).
- ``facenet-vggface2``, ``facenet-casia-webface``: facenet-pytorch's pretrained InceptionResnetV1 (downloads the
  weights once; offline without them: RuntimeError saying so).
- ``random-<backbone>``: an untrained backbone (any models_definition.list_backbones() name, e.g.
  ``random-efficientnet_b0``, ``random-inception_resnet_v1``), weights from torch.manual_seed(0): the chance row.
  ``random-<backbone>@<px>`` embeds at <px> instead of the backbone's default input size.
- a registered experiment name: its checkpoint, found through ``checkpoint_for`` (a dict or a callable
  name -> path, supplied by the caller since fr_lib does not import config) or ``runs_dir/<name>/best.pt``.
- a path to a checkpoint file (``.pt``/``.pth``) written by fr_lib.training.loop.
- a path to an exported model (``.onnx``, ``fr export``): an fr_lib.embedders.onnx.OnnxEmbedder on onnxruntime,
  described by the contract inside the file; resolving it imports nothing from torch.

Every model maps (B, 3, H, W) float images, prepared with ``build_transforms(meta['normalization'],
meta['image_size'], train=False)``, to L2-normalised (B, meta['embedding_size']) float32 embeddings, and is returned
in eval mode on ``device``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Union

PRETRAINED = {
    "dlib-resnet": "dlib's ResNet face descriptor, 128-d (pretrained, offline; pip install 'fr_lib[dlib]')",
    "facenet-vggface2": "facenet-pytorch InceptionResnetV1 trained on VGGFace2 (downloads weights once)",
    "facenet-casia-webface": "facenet-pytorch InceptionResnetV1 trained on CASIA-WebFace (downloads weights once)",
}
RANDOM_PREFIX = "random-"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIX = ".onnx"

CheckpointLookup = Union[Mapping[str, Union[str, os.PathLike]], Callable[[str], Union[str, os.PathLike, None]], None]


def _meta(name: str, kind: str, model, **extra) -> dict:
    return {"name": name, "kind": kind, "image_size": int(model.default_image_size),
            "normalization": model.normalization, "embedding_size": int(model.embedding_size),
            "backbone": model.backbone_name, "checkpoint": None, "config": None, **extra}


def _lookup(checkpoint_for: CheckpointLookup, name: str):
    """Path registered for ``name`` or None; a callable may also raise KeyError/LookupError for unknown names."""
    if checkpoint_for is None:
        return None
    if callable(checkpoint_for):
        try:
            return checkpoint_for(name)
        except LookupError:
            return None
    return checkpoint_for.get(name)


def _load_checkpoint(path, name: str | None, device: str) -> tuple[torch.nn.Module, dict]:
    from fr_lib.training.checkpoint import load_embedder

    path = Path(path)
    model, ckpt_meta = load_embedder(path, device=device)
    config = ckpt_meta.get("config") or {}
    name = name or config.get("name") or path.stem
    meta = {**ckpt_meta, "name": name, "kind": "checkpoint", "checkpoint": str(path),
            "image_size": int(ckpt_meta.get("image_size") or model.default_image_size),
            "normalization": ckpt_meta.get("normalization") or model.normalization,
            "embedding_size": int(getattr(model, "embedding_size", 0) or ckpt_meta.get("embedding_size")),
            "backbone": getattr(model, "backbone_name", None)}
    return model, meta


def _random_backbone(name: str, backbone: str) -> tuple[torch.nn.Module, dict]:
    """random-<backbone>[@<px>]: '@64' embeds at 64 px instead of the backbone's default size (compare a random
    row at the very input size the trained rows use)."""
    import torch

    from models_definition import build_backbone

    backbone, _, px = backbone.partition("@")
    if px and not (px.isdigit() and int(px) >= 16):
        raise ValueError(f"{name}: the size after '@' must be a whole number of pixels >= 16, e.g. "
                         f"random-{backbone}@64")
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG stream
        torch.manual_seed(0)
        model = build_backbone(backbone, pretrained=None, image_size=int(px) if px else None)
    meta = _meta(name, "random", model, seed=0)
    if px:
        meta["image_size"] = int(px)
    return model, meta


def _facenet(name: str) -> tuple[torch.nn.Module, dict]:
    from models_definition import build_backbone

    tag = name.removeprefix("facenet-")
    try:
        model = build_backbone("inception_resnet_v1", pretrained=tag)
    except OSError as e:  # in case the backbone registry lets a network error through
        raise RuntimeError(f"{name}: could not download facenet-pytorch's {tag!r} weights ({e}); this machine seems "
                           f"offline") from e
    return model, _meta(name, "pretrained", model, pretrained=tag)


def embedder_choices(checkpoint_for: CheckpointLookup = None, runs_dir=None) -> list[str]:
    """Names resolve_embedder accepts (random-<backbone> stands for every backbone name)."""
    names = list(PRETRAINED) + [f"{RANDOM_PREFIX}<backbone>"]
    if isinstance(checkpoint_for, Mapping):
        names += sorted(checkpoint_for)
    if runs_dir is not None and Path(runs_dir).is_dir():
        names += sorted(p.parent.name for p in Path(runs_dir).glob("*/best.pt") if p.parent.name not in names)
    return names + ["<path/to/checkpoint.pt>"]


def resolve_embedder(name_or_path, device: str = "cpu", runs_dir=None,
                     checkpoint_for: CheckpointLookup = None) -> tuple[torch.nn.Module, dict]:
    """Embedding model for a name or checkpoint path (see the module docstring) -> (model in eval mode on device,
    meta). meta: name, kind ('pretrained' | 'random' | 'checkpoint' | 'onnx'), image_size (px), normalization
    ('imagenet' | 'facenet' | 'unit'), embedding_size, backbone, checkpoint (path or None); checkpoints add
    load_embedder's keys (config dict, ...); an exported .onnx model adds 'onnx' (its path), 'model_name',
    'threshold' (from its contract) and 'config' = {'data': the run's data config}.

    Raises: ValueError listing the choices for an unknown name; FileNotFoundError for a registered experiment or a
    path with no checkpoint file; ImportError (with the pip command) for dlib-resnet without the dlib extra;
    RuntimeError for facenet-* weights that cannot be downloaded. Callers comparing several models catch the last
    two and show a visible "skipped: <reason>" row.
    """
    text = os.fspath(name_or_path)
    is_path = isinstance(name_or_path, os.PathLike) or text.endswith(CHECKPOINT_SUFFIXES) or os.sep in text
    if text.endswith(ONNX_SUFFIX):
        from fr_lib.embedders.onnx import OnnxEmbedder

        model = OnnxEmbedder(text, device=device)  # FileNotFoundError / ValueError name the file
        c = model.contract
        meta = {**_meta(Path(text).stem, "onnx", model), "checkpoint": None, "onnx": text,
                "model_name": model.model_name, "threshold": c.get("threshold"),
                "config": {"data": c["data_config"]} if c.get("data_config") else None}
    elif is_path:
        if not Path(text).is_file():
            raise FileNotFoundError(f"no checkpoint file {text}")
        model, meta = _load_checkpoint(text, None, device)
    elif text == "dlib-resnet":
        from fr_lib.embedders.dlib_resnet import DlibResNetEmbedder
        model = DlibResNetEmbedder()
        meta = _meta(text, "pretrained", model)
    elif text in PRETRAINED:
        model, meta = _facenet(text)
    elif text.startswith(RANDOM_PREFIX) and len(text) > len(RANDOM_PREFIX):
        model, meta = _random_backbone(text, text[len(RANDOM_PREFIX):])
    else:
        path = _lookup(checkpoint_for, text)
        if path is None and runs_dir is not None and (Path(runs_dir) / text / "best.pt").is_file():
            path = Path(runs_dir) / text / "best.pt"
        if path is None:
            raise ValueError(f"unknown embedder {text!r}; choose one of: "
                             f"{', '.join(embedder_choices(checkpoint_for, runs_dir))}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"experiment {text!r} has no checkpoint at {path}: train it first "
                                    f"(fr train {text})")
        model, meta = _load_checkpoint(path, text, device)
    return model.to(device).eval(), meta
