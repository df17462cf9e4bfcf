"""10-fold verification accuracy: fr_lib's exact threshold search (fr_lib.evaluation.bin_verification.score_bin) vs
insightface arcface_torch's threshold grid (eval/verification.py: squared distance, np.arange(0, 4, 0.01), same
if distance < t), on the same synthetic pair embeddings. Prints the difference per setting and the largest one, and
the time ratio of the two searches.

    python benchmarks/bin_threshold_grid.py                 # 10 seeds x 3 noise levels, 6000 pairs (LFW's size)
    python benchmarks/bin_threshold_grid.py --pairs 7000 --seeds 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import KFold

from fr_lib.evaluation.bin_verification import score_bin


def pair_embeddings(n_pairs: int, dim: int, noise: float, seed: int):
    """(2N, D) unit rows in pair order and (N,) flags: a same pair shares a centre, a different pair does not."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.normal(size=(n_pairs, dim))
    b = np.where(issame[:, None], a, rng.normal(size=(n_pairs, dim))) + noise * rng.normal(size=(n_pairs, dim))
    e = np.empty((2 * n_pairs, dim))
    e[0::2], e[1::2] = a, b
    return e / np.linalg.norm(e, axis=1, keepdims=True), issame


def insightface_grid_accuracy(emb: np.ndarray, issame: np.ndarray) -> float:
    """Mean test-fold accuracy of insightface's calculate_roc (first best grid point on the 9 training folds)."""
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    grid = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(10, shuffle=False).split(dist):
        train_acc = ((dist[train][None, :] < grid[:, None]) == issame[train][None, :]).mean(1)
        t = grid[int(np.argmax(train_acc))]
        accs.append(((dist[test] < t) == issame[test]).mean())
    return float(np.mean(accs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dim", type=int, default=16)
    args = ap.parse_args()
    diffs, t_exact, t_grid = [], 0.0, 0.0
    for noise in (0.5, 0.9, 1.5):
        for seed in range(args.seeds):
            emb, issame = pair_embeddings(args.pairs, args.dim, noise, seed)
            t0 = time.perf_counter()
            exact = score_bin(emb, issame).accuracy
            t1 = time.perf_counter()
            grid = insightface_grid_accuracy(emb, issame)
            t2 = time.perf_counter()
            t_exact, t_grid = t_exact + t1 - t0, t_grid + t2 - t1
            diffs.append(exact - grid)
        print(f"noise {noise}: exact accuracy {exact:.4f} (last seed), exact - grid over seeds: "
              f"mean {np.mean(diffs[-args.seeds:]):+.5f}, max |.| {np.max(np.abs(diffs[-args.seeds:])):.5f}")
    d = np.array(diffs)
    print(f"{len(d)} sets of {args.pairs} pairs: exact - insightface grid = mean {d.mean():+.5f}, "
          f"max |.| {np.abs(d).max():.5f}; search time exact / grid = {t_exact / t_grid:.2f}x")


if __name__ == "__main__":
    main()
