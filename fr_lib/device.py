"""One place that turns a device name ('auto', 'cpu', 'cuda', 'cuda:N') into a checked torch device name."""
from __future__ import annotations


class DeviceUnavailable(ValueError):
    """A CUDA device was asked for on a machine without one (a ValueError, so CLIs report it as bad input)."""


def resolve_device_name(name: str, local_rank: int | None = None) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. A CUDA name on a machine without CUDA raises
    DeviceUnavailable; an unknown name raises ValueError. With ``local_rank`` (torchrun), a bare 'cuda' becomes
    'cuda:<local_rank>'."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"--device {name} asked for but CUDA is not available on this machine; "
                                    f"use --device cpu")
        if device.index is None and local_rank is not None:
            name = f"cuda:{local_rank}"
    return name
