"""An exported embedding model (``fr export --format onnx``) run by onnxruntime, with no torch import.

    >>> embedder = OnnxEmbedder("model.onnx")
    >>> embedder.embed_images([aligned_crop])          # (112, 112, 3) uint8 RGB -> (1, 512) float32, unit rows
    >>> embedder.contract["threshold"]                 # the run's calibrated cosine threshold, or None

The preprocessing contract travels inside the model (``metadata_props['fr_lib_contract']``, JSON) and in a JSON
file beside it (``model.onnx.json``); :func:`read_contract` reads it. The numpy preprocessing here is the contract
applied literally: resize the aligned RGB crop to ``input_size`` (bilinear, antialiased: PIL, which torchvision's
antialiased resize of uint8 images matches to within rounding), scale to [0, 1], subtract ``mean`` and divide by
``std`` per channel, HWC -> NCHW float32. The graph ends in the embedding neck's L2 normalisation, so its output
rows have unit norm and cosine similarity is a dot product.

An OnnxEmbedder stands in wherever fr_lib takes an embedding model: FacePipeline (``embed_images``),
resolve_embedder (``*.onnx`` paths) and fr_lib.evaluation.embed.extract_embeddings (``__call__`` on a batch of
normalised images, a torch tensor or a numpy array; a tensor gives a tensor back).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

CONTRACT_KEY = "fr_lib_contract"
CONTRACT_FORMAT = "fr_lib-onnx-embedder"
CONTRACT_SUFFIX = ".json"   # model.onnx -> model.onnx.json


def contract_path(model_path: str | os.PathLike) -> Path:
    """Where the JSON copy of the contract lives: ``<model>.json`` beside the model file."""
    return Path(str(model_path) + CONTRACT_SUFFIX)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("running an exported .onnx model needs onnxruntime: pip install 'fr_lib[onnx]'") from e
    return onnxruntime


def read_contract(path: str | os.PathLike) -> dict:
    """The preprocessing contract of an exported model: from the model's metadata (what onnxruntime sees), else
    from the JSON beside it. ValueError when neither holds an fr_lib contract."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model {path}: make one with `fr export ... {path.name}`")
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is read
    try:
        meta = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path} is not a loadable ONNX model: {e}") from e
    text = meta.custom_metadata_map.get(CONTRACT_KEY)
    if text is None and contract_path(path).is_file():
        text = contract_path(path).read_text()
    if text is None:
        raise ValueError(f"{path} has no fr_lib preprocessing contract (metadata key {CONTRACT_KEY!r}, or "
                         f"{contract_path(path).name}): export it with `fr export`")
    try:
        contract = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: the fr_lib contract is not valid JSON ({e})") from e
    if contract.get("format") != CONTRACT_FORMAT:
        raise ValueError(f"{path}: contract format {contract.get('format')!r}, expected {CONTRACT_FORMAT!r}")
    return contract


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for a torch-style device name ('cpu', 'cuda', 'cuda:N', 'auto')."""
    ort = _onnxruntime()
    available = ort.get_available_providers()
    if str(device).startswith(("cuda", "auto")) and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        raise RuntimeError(f"device {device!r}: this onnxruntime has no CUDA provider (it has {available}); "
                           "install onnxruntime-gpu or use --device cpu")
    return ["CPUExecutionProvider"]


class OnnxEmbedder:
    """An exported fr_lib embedding model on onnxruntime.

    Args:
        path: the .onnx file written by fr_lib.embedders.export.export_onnx.
        device: 'cpu' (default), 'cuda' or 'auto' (onnxruntime-gpu's CUDA provider when present).
        threads: intra-op threads of the session (None: onnxruntime's default, one per core).

    Attributes mirror models_definition.EmbeddingModel so that code written for a torch model reads them the same:
    ``embedding_size``, ``normalization``, ``default_image_size`` (the contract's input side, px),
    ``backbone_name``; plus ``model_name`` (the gallery key of the exported weights: the same as the PyTorch
    model's, so a gallery enrolled with one is searched with the other), ``contract`` (dict) and ``weights_sha1``.
    """

    training = False

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        ort = _onnxruntime()
        self.path = Path(path)
        self.contract = read_contract(self.path)
        c = self.contract
        self.embedding_size = int(c["embedding_size"])
        self.default_image_size = int(c["input_size"][0])
        self.normalization = str(c["normalization"])
        self.backbone_name = c.get("backbone")
        self.model_name = str(c["model_name"])
        self._mean = np.asarray(c["mean"], np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(c["std"], np.float32).reshape(1, 3, 1, 1)
        self.weights_sha1 = hashlib.sha1(self.path.read_bytes()).hexdigest()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=providers_for(device))
        self.input_name = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"OnnxEmbedder({str(self.path)!r}, model_name={self.model_name!r})"

    # torch-module look-alikes, so FacePipeline / extract_embeddings / resolve_embedder can hold one
    def to(self, device=None) -> "OnnxEmbedder":
        return self  # the execution provider is chosen when the session is made (``device``)

    def eval(self) -> "OnnxEmbedder":
        return self

    def train(self, mode: bool = True) -> "OnnxEmbedder":
        if mode:
            raise RuntimeError("an exported ONNX model is inference-only")
        return self

    # ------------------------------------------------------------------------------------------- embedding
    def preprocess(self, crops) -> np.ndarray:
        """List of (h, w, 3) uint8 RGB crops -> (B, 3, S, S) float32, the contract's resize + normalisation."""
        from PIL import Image

        side = self.default_image_size
        batch = np.empty((len(crops), side, side, 3), np.uint8)
        for i, crop in enumerate(crops):
            crop = np.asarray(crop)
            if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                raise ValueError(f"crop {i}: expected an (h, w, 3) uint8 RGB array, got {crop.dtype} {crop.shape}")
            if crop.shape[:2] != (side, side):
                crop = np.asarray(Image.fromarray(crop).resize((side, side), Image.BILINEAR))
            batch[i] = crop
        x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray((x - self._mean) / self._std, dtype=np.float32)

    def run(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 normalised images -> (B, embedding_size) float32 unit rows."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        side = self.default_image_size
        if images.ndim != 4 or images.shape[1:] != (3, side, side):
            raise ValueError(f"{self.path.name} takes (B, 3, {side}, {side}) images, got {images.shape}")
        return self.session.run(None, {self.input_name: images})[0]

    def embed_images(self, crops, batch_size: int = 64) -> np.ndarray:
        """Aligned face crops ((h, w, 3) uint8 RGB arrays) -> (N, embedding_size) float32 L2-normalised."""
        out = [self.run(self.preprocess(crops[i:i + batch_size])) for i in range(0, len(crops), batch_size)]
        if not out:
            return np.zeros((0, self.embedding_size), np.float32)
        emb = np.concatenate(out).astype(np.float32)
        # the graph already normalises; this guards only against rounding in the last bit
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    def __call__(self, images):
        """A normalised (B, 3, S, S) batch as a numpy array or a torch tensor -> embeddings of the same kind."""
        if hasattr(images, "detach"):  # a torch tensor (extract_embeddings): torch is already imported there
            import torch

            return torch.from_numpy(self.run(images.detach().cpu().float().numpy())).to(images.device)
        return self.run(images)
