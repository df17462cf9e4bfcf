"""Training throughput (images/s) of one optimiser step, fp32 vs channels_last vs bf16 autocast.

    python benchmarks/train_step.py                       # CPU here: efficientnet_b0 @ 112 px, inception_resnet_v1 @ 160 px
    python benchmarks/train_step.py --device cuda --batch-size 256 --steps 20 --modes fp32,channels_last,bf16,compile

Each step is what fr_lib.training.loop runs: backbone + neck -> criterion (CE over 1000 classes) -> backward -> AdamW.
Prints images/s per (backbone, mode) and the ratio to the fp32 baseline of the same backbone. Synthetic inputs,
so the data loader is not measured (see benchmarks/input_pipeline.py). CPU bf16 depends on the CPU: see
docs/pitfalls.md. fr_lib enables
AMP on CUDA only.
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from fr_lib.losses import build_criterion
from fr_lib.training.loop import TrainStep
from models_definition import build_backbone

MODES = ("fp32", "channels_last", "bf16")   # also "compile": bf16 + channels_last + torch.compile (not default:
                                           # compiling takes a minute per backbone)
DEFAULT_SIZES = {"efficientnet_b0": 112, "inception_resnet_v1": 160}


def images_per_second(backbone: str, size: int, mode: str, device: torch.device, batch_size: int, steps: int,
                      warmup: int) -> float:
    torch.manual_seed(0)
    model = build_backbone(backbone, embedding_size=512).to(device)
    criterion = build_criterion("ce", num_classes=1000, embedding_size=512).to(device)
    fmt = torch.channels_last if mode in ("channels_last", "bf16", "compile") else torch.preserve_format
    model.to(memory_format=fmt)
    step = TrainStep(torch.compile(model) if mode == "compile" else model, criterion).train()
    opt = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=1e-3)
    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode in ("bf16", "compile") else nullcontext()

    def one():
        with autocast:
            loss, _ = step(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbones", default="efficientnet_b0,inception_resnet_v1")
    p.add_argument("--sizes", default=None, help="comma-separated px per backbone (default 112 / 160)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2,
                   help="measure every mode this many times, interleaved, and keep the best (load fluctuations)")
    args = p.parse_args()
    device = torch.device(args.device)
    names = args.backbones.split(",")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [DEFAULT_SIZES.get(n, 112) for n in names]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'backbone':<22}{'px':>5}  {'mode':<14}{'images/s':>10}  {'vs fp32':>8}")
    modes = args.modes.split(",")
    for name, size in zip(names, sizes):
        best = {m: 0.0 for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                best[mode] = max(best[mode], images_per_second(name, size, mode, device, args.batch_size,
                                                               args.steps, args.warmup))
        base = best.get("fp32")
        for mode in modes:
            ips = best[mode]
            ratio = f"{ips / base:7.2f}x" if base else "      -"
            print(f"{name:<22}{size:>5}  {mode:<14}{ips:>10.1f}  {ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
