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

    from fr_lib.pipeline import FacePipeline

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
