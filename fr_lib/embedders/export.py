"""Export a trained embedding model to ONNX (or TorchScript) with its preprocessing contract, and verify it.

    >>> report = export_checkpoint("runs/arcface-efficientnet/best.pt", "model.onnx")
    >>> report.max_abs_diff, report.min_cosine          # onnxruntime vs PyTorch on real and synthetic faces
    (2.1e-07, 0.99999994)

Only the embedding model is exported (backbone + neck, ``load_embedder``): a training checkpoint's classifier /
loss weights live in its 'criterion' entry and never reach the file. The batch axis is dynamic; the input side is
fixed (the size the model was trained at). The contract (input size, normalisation name + mean/std, RGB order,
NCHW layout, L2-normalised output, the calibrated cosine threshold when the run has a threshold.json) goes into the
ONNX ``metadata_props`` and into ``<out>.json`` beside it; fr_lib.embedders.onnx.OnnxEmbedder reads it.

The exporter is torch.onnx's TorchScript-based one (``dynamo=False``): it exports every backbone here (timm
EfficientNet / MobileNet / ResNet, facenet-pytorch InceptionResnetV1) in seconds with no extra dependency, while
the torch.export-based default needs ``onnxscript`` and traces data-dependent checks (FacenetTrunk's minimum-size
guard) that a fixed-size face crop never exercises. Both write standard ONNX that onnxruntime runs.

Verification embeds aligned faces with both runtimes: skimage's astronaut photo through fr_lib.align (MTCNN +
5-point similarity alignment) and synthetic faces (fr_lib.data.synth.render_face), each through the numpy
preprocessing of the contract on the ONNX side and the training eval transform on the PyTorch side.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fr_lib.embedders.onnx import CONTRACT_FORMAT, CONTRACT_KEY, contract_path
from fr_lib.io import atomic_path, atomic_write

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
MAX_ABS_DIFF_GOAL = 1e-4   # fp32 embeddings, unit norm


class ExportError(ValueError):
    """The model cannot be exported as asked (an operator the exporter or the opset lacks, a failed check)."""


@dataclass
class ExportReport:
    """What ``export_*`` wrote and how the exported model agreed with PyTorch. ``max_abs_diff``: largest absolute
    difference of any embedding coordinate; ``min_cosine``: smallest cosine similarity between the two
    embeddings of one face; ``per_source``: the same two numbers and the face count per test-face source."""
    path: Path
    contract_path: Path | None
    format: str
    contract: dict
    max_abs_diff: float
    min_cosine: float
    num_faces: int
    per_source: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = "; ".join(f"{k}: {v['num_faces']} faces, max abs diff {v['max_abs_diff']:.2e}, "
                          f"min cosine {v['min_cosine']:.8f}" for k, v in self.per_source.items())
        verdict = "ok" if self.max_abs_diff <= MAX_ABS_DIFF_GOAL else f"ABOVE the {MAX_ABS_DIFF_GOAL:g} goal"
        return (f"wrote {self.path} ({self.format}); {self.format} vs PyTorch on {self.num_faces} aligned faces: "
                f"max abs diff {self.max_abs_diff:.2e} ({verdict}), min cosine {self.min_cosine:.8f} [{parts}]")


def stored_threshold(checkpoint: str | os.PathLike) -> dict | None:
    """The run's calibrated threshold (fr_lib.evaluation.thresholds: ``threshold.json`` beside the checkpoint,
    written by ``fr eval``) with 'threshold', 'fpr' and 'source', or None when the run has none."""
    from fr_lib.evaluation.thresholds import read_threshold, threshold_path

    try:
        return {**read_threshold(checkpoint), "source": str(threshold_path(checkpoint))}
    except FileNotFoundError:
        return None


def build_contract(*, model_name: str, backbone: str | None, embedding_size: int, image_size: int,
                   normalization: str, threshold: dict | None = None, data_config: dict | None = None,
                   source: str | None = None, opset: int | None = None, fmt: str = "onnx") -> dict:
    """The preprocessing contract (JSON-ready dict) of an exported model; mean/std are the [0, 1]-scale values of
    fr_lib.data.transforms.NORMALIZATIONS[normalization]."""
    from fr_lib import __version__
    from fr_lib.data.transforms import NORMALIZATIONS

    if normalization not in NORMALIZATIONS:
        raise ExportError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[normalization]
    return {
        "format": CONTRACT_FORMAT, "version": 1, "model_format": fmt, "opset": opset,
        "model_name": model_name, "backbone": backbone, "embedding_size": int(embedding_size),
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "input_size": [int(image_size), int(image_size)], "input_layout": "NCHW", "input_dtype": "float32",
        "batch_axis": "dynamic", "color_order": "RGB",
        "alignment": "5-point similarity warp onto the ArcFace template (fr_lib.align.align_face), square crop",
        "resize": "bilinear, antialiased, to input_size (only when the crop has another size)",
        "pixel_scale": "x / 255 (uint8 -> [0, 1])", "normalization": normalization,
        "mean": [float(v) for v in mean], "std": [float(v) for v in std],
        "formula": "input = (rgb / 255 - mean) / std, per channel",
        "output": "float32 (B, embedding_size), L2-normalised rows; cosine similarity = dot product",
        "threshold": None if threshold is None else float(threshold["threshold"]),
        "threshold_fpr": None if threshold is None else threshold.get("fpr"),
        "threshold_rule": "same identity if cosine similarity > threshold",
        "threshold_source": None if threshold is None else threshold.get("source"),
        "data_config": data_config, "source": source, "exported_by": f"fr_lib {__version__}",
    }


# ------------------------------------------------------------------------------------------- test faces
def verification_faces(image_size: int, num_synthetic: int = 8, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Aligned (image_size, image_size, 3) uint8 faces to compare runtimes on: 'astronaut' (skimage's photo,
    MTCNN + align_face) and 'synthetic' (render_face of ``num_synthetic`` identities, rendered at image_size)."""
    from skimage import data

    from fr_lib.align import align_face, detect_faces
    from fr_lib.data.synth import identity_traits, render_face

    photo = data.astronaut()
    detections = detect_faces([photo])[0]
    if not detections:
        raise ExportError("MTCNN found no face in skimage's astronaut photo: the detector is broken")
    faces = {"astronaut": [align_face(photo, detections[0].landmarks, size=image_size)]}
    faces["astronaut"].append(faces["astronaut"][0][:, ::-1].copy())   # its mirror: a second real face
    rng = np.random.default_rng(seed)
    faces["synthetic"] = [np.asarray(render_face(identity_traits(seed, i), rng, size=image_size).convert("RGB"))
                          for i in range(num_synthetic)]
    return faces


def _torch_embeddings(model, crops, normalization: str, image_size: int) -> np.ndarray:
    import torch

    from fr_lib.data import build_transforms

    tf = build_transforms(normalization, image_size, train=False)
    with torch.inference_mode():
        x = torch.stack([tf(np.array(c, dtype=np.uint8)) for c in crops])  # a writable copy for torch
        return torch.nn.functional.normalize(model(x).float(), dim=1).numpy()


def _compare(reference: np.ndarray, other: np.ndarray) -> dict:
    a, b = reference.astype(np.float64), np.asarray(other, np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"num_faces": int(len(reference)), "max_abs_diff": float(np.abs(a - b).max()),
            "min_cosine": float(cos.min())}


def verify(model, embed_other, normalization: str, image_size: int, faces=None) -> dict:
    """Embed the verification faces with the PyTorch ``model`` and with ``embed_other`` (list of uint8 crops ->
    (N, D) array) -> {source: {num_faces, max_abs_diff, min_cosine}}."""
    faces = verification_faces(image_size) if faces is None else faces
    return {name: _compare(_torch_embeddings(model, crops, normalization, image_size), embed_other(crops))
            for name, crops in faces.items()}


# ------------------------------------------------------------------------------------------- export
def _unsupported(e: Exception, opset: int) -> ExportError:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ExportError(f"the model cannot be exported to ONNX opset {opset}: {text}. Try another --opset "
                       f"(e.g. {max(opset, DEFAULT_OPSET) + 1}), replace the operator in the model, or use "
                       "--format torchscript")


def _write_onnx(model, path: Path, image_size: int, opset: int, contract: dict) -> None:
    import onnx
    import torch

    example = torch.zeros(2, 3, image_size, image_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        except (torch.onnx.errors.OnnxExporterError, torch.onnx.errors.SymbolicValueError, RuntimeError) as e:
            raise _unsupported(e, opset) from e
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        flat = {CONTRACT_KEY: json.dumps(contract, sort_keys=True),
                **{k: json.dumps(contract[k]) for k in ("input_size", "normalization", "mean", "std", "color_order",
                                                        "threshold", "model_name", "embedding_size")}}
        for key, value in flat.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name, proto.doc_string = "fr_lib", f"fr_lib face embedder {contract['model_name']}"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))


def _write_torchscript(model, path: Path, image_size: int, contract: dict) -> None:
    import torch

    example = torch.zeros(2, 3, image_size, image_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except RuntimeError as e:
            raise ExportError(f"the model cannot be traced to TorchScript: {str(e).splitlines()[0]}") from e
        torch.jit.save(traced, str(tmp), _extra_files={CONTRACT_KEY: json.dumps(contract, sort_keys=True)})


def _torchscript_embedder(path: Path, normalization: str, image_size: int):
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()  # our own file, just written
    return lambda crops: _torch_embeddings(module, crops, normalization, image_size)


def export_model(model, out, *, model_name: str, image_size: int, normalization: str, fmt: str = "onnx",
                 opset: int = DEFAULT_OPSET, threshold: dict | None = None, data_config: dict | None = None,
                 source: str | None = None, check: bool = True, faces=None) -> ExportReport:
    """Export an embedding model (images (B, 3, image_size, image_size) -> (B, D) unit rows) to ``out``.

    fmt: 'onnx' (metadata + ``<out>.json``) or 'torchscript' (contract in the archive's extra files + JSON).
    threshold: the run's calibrated threshold (``stored_threshold``) or None. check: embed the verification faces
    with both runtimes and raise ExportError when the max abs difference exceeds 1e-4 (fp32).
    """
    import torch

    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; choose one of {FORMATS}")
    model = model.cpu().eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        embedding_size = int(model(torch.zeros(1, 3, image_size, image_size)).shape[1])
    contract = build_contract(model_name=model_name, backbone=getattr(model, "backbone_name", None),
                              embedding_size=embedding_size, image_size=image_size, normalization=normalization,
                              threshold=threshold, data_config=data_config, source=source,
                              opset=opset if fmt == "onnx" else None, fmt=fmt)
    if fmt == "onnx":
        _write_onnx(model, out, image_size, opset, contract)
    else:
        _write_torchscript(model, out, image_size, contract)
    per_source = {}
    if check:
        if fmt == "onnx":
            from fr_lib.embedders.onnx import OnnxEmbedder

            embed_other = OnnxEmbedder(out).embed_images
        else:
            embed_other = _torchscript_embedder(out, normalization, image_size)
        per_source = verify(model, embed_other, normalization, image_size, faces)
        contract["verification"] = per_source
        if fmt == "onnx":  # record the check in the metadata too
            import onnx

            proto = onnx.load(str(out))
            for entry in proto.metadata_props:
                if entry.key == CONTRACT_KEY:
                    entry.value = json.dumps(contract, sort_keys=True)
            with atomic_path(out) as tmp:
                onnx.save(proto, str(tmp))
    json_path = atomic_write(contract_path(out), json.dumps(contract, indent=2, sort_keys=True) + "\n")
    worst = max((v["max_abs_diff"] for v in per_source.values()), default=float("nan"))
    report = ExportReport(out, json_path, fmt, contract, worst,
                          min((v["min_cosine"] for v in per_source.values()), default=float("nan")),
                          sum(v["num_faces"] for v in per_source.values()), per_source)
    if check and not worst <= MAX_ABS_DIFF_GOAL:
        raise ExportError(f"{report.summary()}: the exported model disagrees with PyTorch")
    return report


def export_checkpoint(checkpoint, out, *, name: str | None = None, fmt: str = "onnx", opset: int = DEFAULT_OPSET,
                      check: bool = True, faces=None) -> ExportReport:
    """Export the embedding model of a training checkpoint (fr_lib.training.checkpoint.load_embedder), with the
    run's threshold.json when present. model_name is FacePipeline.from_experiment's ('<experiment>:<backbone>:
    <weights fingerprint>'), so galleries enrolled with the PyTorch model accept the exported one."""
    from fr_lib.recognition.pipeline import weights_fingerprint
    from fr_lib.training.checkpoint import load_embedder

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint file {checkpoint}: train the experiment first (fr train)")
    model, meta = load_embedder(checkpoint, device="cpu")
    config = meta.get("config") or {}
    experiment = name or config.get("name", checkpoint.parent.name)
    backbone = (config.get("model") or {}).get("backbone", getattr(model, "backbone_name", "model"))
    model_name = f"{experiment}:{backbone}:{weights_fingerprint(model)}"
    return export_model(model, out, model_name=model_name, image_size=int(meta["image_size"]),
                        normalization=meta["normalization"], fmt=fmt, opset=opset,
                        threshold=stored_threshold(checkpoint), data_config=config.get("data"),
                        source=str(checkpoint), check=check, faces=faces)


def report_dict(report: ExportReport) -> dict:
    """JSON-ready form of an ExportReport."""
    d = asdict(report)
    d["path"], d["contract_path"] = str(report.path), str(report.contract_path)
    return d
