"""Training throughput (images/s) of train()'s own step, fp32 vs channels_last vs bf16 autocast.

    python benchmarks/train_step.py          # CPU here: efficientnet_b0 @ 112 px, inception_resnet_v1 @ 160 px
    python benchmarks/train_step.py --device cuda --batch-size 256 --steps 20 --modes fp32,channels_last,bf16,compile

Each step is fr_lib.training.loop.train_step on fr_lib.training.loop.build_run's objects for the ce-efficientnet
experiment with the backbone replaced (CE over 1000 classes, AdamW, gradient clipping), timed by
fr_lib.training.speed.measure_speed: the step fr recipe plans with and train() runs. A mode sets train.amp /
train.channels_last / train.compile; on a CPU they are applied anyway (train() applies them on CUDA only), so
the CPU rows show what enabling them there would give. Prints images/s per (backbone, mode) and the ratio to
the fp32 baseline of the same backbone. Synthetic inputs, so the data loader is not measured (see
benchmarks/input_pipeline.py). CPU bf16 depends on the CPU: see docs/pitfalls.md.
"""
from __future__ import annotations

import argparse

import torch

import config
from fr_lib.training.speed import measure_speed

MODES = {   # mode -> config overrides; "compile" is not a default mode: compiling takes a minute per backbone
    "fp32": {"train.amp": "none", "train.channels_last": False},
    "channels_last": {"train.amp": "none", "train.channels_last": True},
    "bf16": {"train.amp": "bf16", "train.channels_last": True},
    "compile": {"train.amp": "bf16", "train.channels_last": True, "train.compile": True},
}
DEFAULT_MODES = ("fp32", "channels_last", "bf16")
DEFAULT_SIZES = {"efficientnet_b0": 112, "inception_resnet_v1": 160}
NUM_CLASSES = 1000


def step_config(backbone: str, size: int, batch_size: int, mode: str):
    return config.get_experiment("ce-efficientnet", **{
        "model.backbone": backbone, "model.embedding_size": 512, "model.pretrained": None, "data.image_size": size,
        "data.batch_size": batch_size, "data.batch_augment": False, "train.init_from": None, **MODES[mode]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbones", default="efficientnet_b0,inception_resnet_v1")
    p.add_argument("--sizes", default=None, help="comma-separated px per backbone (default 112 / 160)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of {sorted(MODES)}")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2,
                   help="measure every mode this many times, interleaved, and keep the best (load fluctuations)")
    args = p.parse_args()
    device = torch.device(args.device)
    names = args.backbones.split(",")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [DEFAULT_SIZES.get(n, 112) for n in names]
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        p.error(f"unknown mode(s) {unknown}; choose from {sorted(MODES)}")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'backbone':<22}{'px':>5}  {'mode':<14}{'train img/s':>12}  {'vs fp32':>8}{'eval img/s':>12}  "
          f"{'vs fp32':>8}")
    for name, size in zip(names, sizes):
        best = {m: (0.0, 0.0) for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                speed = measure_speed(step_config(name, size, args.batch_size, mode), NUM_CLASSES, args.steps,
                                      str(device), args.warmup, apply_on_cpu=True)
                best[mode] = (max(best[mode][0], speed.train_images_per_s),
                              max(best[mode][1], speed.eval_images_per_s))
        base = best.get("fp32")
        for mode in modes:
            train_ips, eval_ips = best[mode]
            ratios = [f"{v / b:7.2f}x" if base else "      -" for v, b in zip(best[mode], base or (0, 0))]
            print(f"{name:<22}{size:>5}  {mode:<14}{train_ips:>12.1f}  {ratios[0]:>8}{eval_ips:>12.1f}  "
                  f"{ratios[1]:>8}", flush=True)


if __name__ == "__main__":
    main()
