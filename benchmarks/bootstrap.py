"""Benchmark the identity-level bootstrap (fr_lib.evaluation.bootstrap) against one identification_rate call.

    python benchmarks/bootstrap.py                  # demo size and 10x, 200 resamples, 512-d
    python benchmarks/bootstrap.py --resamples 1000 --scales 1,10,30

Named baseline: one ``identification_rate`` call on the same embeddings (what fr demo computes per table row).
Data per scale s: 18 s query identities and 18 s distractor identities x 10 images (s = 1 is fr demo's held-out
set: 18 + 18 identities of the demo preset), identity centres + noise. Prints, per scale, the negatives, the
baseline's time (best of 3), the bootstrap's time split into its one-off part (similarities + sort) and the
resamples, and the ratio bootstrap / baseline.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def make_data(n_query_ids: int, n_distractor_ids: int, images: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q_labels = np.repeat(np.arange(n_query_ids), images)
    d_labels = np.repeat(np.arange(n_distractor_ids), images)
    q = rng.standard_normal((n_query_ids, dim), dtype=np.float32)[q_labels]
    d = rng.standard_normal((n_distractor_ids, dim), dtype=np.float32)[d_labels]
    q += 1.5 * rng.standard_normal(q.shape, dtype=np.float32)
    d += 1.5 * rng.standard_normal(d.shape, dtype=np.float32)
    return q, q_labels, d, d_labels


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> None:
    from fr_lib.evaluation.bootstrap import IdentityPairs, bootstrap_identification_rate, draw_counts
    from fr_lib.evaluation.metrics import identification_rate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resamples", type=int, default=200)
    p.add_argument("--scales", default="1,10", help="comma-separated multiples of the demo's 18 + 18 identities")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args(argv)
    print(f"bootstrap ({args.resamples} resamples) vs one identification_rate call; {args.dim}-d, "
          f"{args.images} images per identity")
    print("scale | query ids | distractor ids | negatives | identification_rate s | bootstrap s (one-off + "
          "resamples) | ratio")
    warm = make_data(4, 4, 3, 8)   # imports (scipy.sparse) and first-call costs out of the timings
    bootstrap_identification_rate(*warm, n_resamples=2)
    identification_rate(*warm[:3])
    for scale in (int(s) for s in args.scales.split(",")):
        n_ids = 18 * scale
        q, ql, d, dl = make_data(n_ids, n_ids, args.images, args.dim, seed=scale)
        t_ref, ref = best_of(lambda: identification_rate(q, ql, d), 3)
        repeats = 3 if scale <= 2 else 1
        t_boot, b = best_of(lambda: bootstrap_identification_rate(q, ql, d, dl, n_resamples=args.resamples),
                            repeats)
        # the same work in its two parts: similarities + sort + segment counts once, then the resamples
        t_pairs, pairs = best_of(lambda: IdentityPairs(q, ql, d, dl), 1)
        rng = np.random.default_rng(0)
        counts = [(draw_counts(rng, n_ids), draw_counts(rng, n_ids)) for _ in range(args.resamples)]
        t_res, _ = best_of(lambda: pairs.evaluate_many(np.array([a for a, _ in counts]),
                                                       np.array([c for _, c in counts])), 1)
        assert np.array_equal(b.thresholds, ref.thresholds), "point estimate differs from identification_rate"
        print(f"{scale:>5} | {n_ids:>9} | {n_ids:>14} | {ref.n_negatives:>9} | {t_ref:>21.3f} | "
              f"{t_boot:>8.3f} ({t_pairs:.3f} + {t_res:.3f}) | {t_boot / t_ref:.1f}x")


if __name__ == "__main__":
    main()
