"""Per-face embedding latency: the exported model on onnxruntime vs the same model in PyTorch eager, this CPU.

    python benchmarks/onnx_latency.py [--backbones efficientnet_b0 inception_resnet_v1] [--threads 2]
                                      [--batches 1 32] [--repeats 20]

For each backbone (random weights, exported with fr_lib.embedders.export.export_model at its default input size:
112 px timm, 160 px InceptionResnetV1) and batch size: median wall time of one forward pass of already
preprocessed images, divided by the batch size = ms per face. Both runtimes get the same number of threads
(torch.set_num_threads / onnxruntime intra_op_num_threads). Baseline: PyTorch eager under torch.inference_mode();
the ratio printed is PyTorch ms / onnxruntime ms (> 1: onnxruntime is faster). The largest absolute difference
between the two embeddings is printed as a check that both computed the same thing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, onnxruntime's first-run planning)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    import torch

    from fr_lib.embedders.export import export_model
    from fr_lib.embedders.onnx import OnnxEmbedder
    from models_definition import build_backbone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_b0", "inception_resnet_v1"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime (CPUExecutionProvider), {args.threads} threads; ms per face, "
          "median of one forward pass / batch size")
    print("| backbone | px | batch | PyTorch eager ms/face | onnxruntime ms/face | PyTorch / onnxruntime "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones:
            torch.manual_seed(0)
            model = build_backbone(name, embedding_size=512).eval()
            size = int(model.default_image_size)
            path = Path(tmp) / f"{name}.onnx"
            export_model(model, path, model_name=f"bench:{name}", image_size=size, normalization=model.normalization,
                         check=False)
            onnx_model = OnnxEmbedder(path, threads=args.threads)
            for batch in args.batches:
                x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
                xt = torch.from_numpy(x)

                def eager():
                    with torch.inference_mode():
                        return model(xt)

                repeats = args.repeats if batch < 16 else max(3, args.repeats // 4)
                t_torch = _median_s(eager, repeats)
                t_onnx = _median_s(lambda: onnx_model.run(x), repeats)
                diff = float(np.abs(eager().numpy() - onnx_model.run(x)).max())
                print(f"| {name} | {size} | {batch} | {1000 * t_torch / batch:.2f} | {1000 * t_onnx / batch:.2f} | "
                      f"{t_torch / t_onnx:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
