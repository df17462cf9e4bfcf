"""Helpers shared by the recognition tests (gallery, serve, recognize): a tiny embedding model with weights made
in the test, and a uvicorn server on a free loopback port run in a thread."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np


def tiny_pipeline(embedding_size: int = 16, seed: int = 0, model_name: str = "tiny-test"):
    """A FacePipeline over a small random conv net (weights from ``seed``; nothing downloaded)."""
    import torch

    from fr_lib.recognition.pipeline import FacePipeline

    class TinyEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding_size = embedding_size
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                torch.nn.Linear(128, embedding_size))

        def forward(self, x):
            return torch.nn.functional.normalize(self.net(x), dim=1)

    torch.manual_seed(seed)
    return FacePipeline(TinyEmbedder(), 112, "imagenet", model_name=model_name)


def png_base64(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` with uvicorn on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ a trained model
EXPERIMENT = "arcface-efficientnet"  # registry name; backbone/size overridden below to keep the test fast
TRAIN_IMAGES, N_ENROLLED = 7, 12     # per identity: images 0..6 train/enroll, 7..9 held out; ids 12..15 never enrolled
_TRAINED: dict = {}


def trained_experiment(synth_root, runs_dir) -> dict:
    """Train a tiny ArcFace model on the first TRAIN_IMAGES images of every synthetic identity (cached for the
    session), and store the FPR=0.01 threshold beside it as `fr eval` does, from the held-out images.

    Returns dict(runs_dir, checkpoint, threshold, ids, train_root). Training runs single-threaded: on a busy
    2-core machine, 2 intra-op threads spin against each other and run ~20x slower for a model this small.
    """
    import shutil

    import torch

    key = str(synth_root)
    if key in _TRAINED:
        return _TRAINED[key]
    import config
    from fr_lib.evaluation.thresholds import write_threshold
    from fr_lib.evaluation.metrics import identification_rate
    from fr_lib.recognition.pipeline import FacePipeline
    from fr_lib.training.loop import train

    ids = sorted(p.name for p in synth_root.iterdir() if p.is_dir())
    train_root = runs_dir.parent / "train_root"
    for identity in ids:
        (train_root / identity).mkdir(parents=True, exist_ok=True)
        for f in sorted((synth_root / identity).iterdir())[:TRAIN_IMAGES]:
            shutil.copy(f, train_root / identity / f.name)
    cfg = config.get_experiment(EXPERIMENT, preset="tiny", **{
        "data.root": str(train_root), "data.image_size": 64, "data.augment": False,
        "data.eval_identity_fraction": 0.0, "data.val_fraction": 0.0, "model.backbone": "test_efficientnet",
        "loss.margin": None, "loss.scale": None, "optim.optimizer": "adamw", "optim.lr": 1e-2,
        "optim.warmup_epochs": 0.0, "train.epochs": 40})
    old_runs, old_threads = config.RUNS_DIR, torch.get_num_threads()
    config.RUNS_DIR = runs_dir
    torch.set_num_threads(1)
    try:
        summary = train(cfg, progress=False)
    finally:
        config.RUNS_DIR = old_runs
        torch.set_num_threads(old_threads)
    checkpoint = summary["best_checkpoint"]
    pipeline = FacePipeline.from_experiment(checkpoint)
    held_out = [(k, f) for k, identity in enumerate(ids)
                for f in sorted((synth_root / identity).iterdir())[TRAIN_IMAGES:]]
    emb = pipeline.embed_crops([str(f) for _, f in held_out])
    result = identification_rate(emb, np.array([k for k, _ in held_out]), None, fprs=(0.01,))
    write_threshold(checkpoint, result, pipeline.embedding_size, str(synth_root))
    _TRAINED[key] = dict(runs_dir=runs_dir, checkpoint=checkpoint, threshold=float(result.thresholds[0]), ids=ids,
                         train_root=train_root)
    return _TRAINED[key]
