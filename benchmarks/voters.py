"""Which voter aggregation identifies best: mean / max / centroid of a person's enrolled photos (docs/voters.md).

    python benchmarks/voters.py ALIGNED_ROOT [--model dlib-resnet] [--enrolled 3,5,10] [--probes 5] [--seeds 3]

ALIGNED_ROOT: aligned crops in identity/photo layout (``fr align`` output), identities the model never trained on.
Per seed, each identity with at least max(--enrolled) + --probes photos gets --probes probe photos and an enrolment
pool (disjoint, shuffled by the seed); a gallery enrols k photos of every identity. For every probe and aggregation:
- closed set: top-1 accuracy (the best-scoring person is the probe's own);
- open set (a stranger must be rejected): impostor trials are the same probes against the gallery without their own
  identity (leave-one-identity-out: every identity is a stranger once), the threshold is the impostors' best-score
  quantile at FPR (N = int(FPR * trials), threshold = descending sorted impostor scores[N], as the ID-rate
  protocol), and TPR is the share of probes whose top-1 is correct AND scores above it (detection and
  identification rate).
Prints a markdown table (mean and standard deviation over the seeds), the baseline being 'max' (nearest photo).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fr_lib.recognition.voting import AGGREGATIONS, group_faces, person_scores  # noqa: E402

FPRS = (0.01, 0.1)


def open_set_tpr(genuine: np.ndarray, correct: np.ndarray, impostor: np.ndarray, fpr: float) -> float:
    """genuine (Q,) best score, correct (Q,) bool top-1 right, impostor (T,) best score of strangers."""
    ranked = np.sort(impostor)[::-1]
    threshold = ranked[int(fpr * len(ranked))]
    return float(np.mean(correct & (genuine > threshold)))


def evaluate(emb: np.ndarray, owner: np.ndarray, k: int, probes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    enrol_rows, probe_rows = [], []
    people = np.unique(owner)
    for p in people:
        rows = rng.permutation(np.flatnonzero(owner == p))
        probe_rows.append(rows[:probes])
        enrol_rows.append(rows[probes:probes + k])
    enrol, probe = np.concatenate(enrol_rows), np.concatenate(probe_rows)
    faces, face_owner = emb[enrol], np.searchsorted(people, owner[enrol])
    truth = np.searchsorted(people, owner[probe])
    groups = group_faces(faces, face_owner, len(people))
    out = {}
    for aggregation in AGGREGATIONS:
        scores = person_scores(emb[probe], faces, groups, aggregation)
        best = scores.argmax(axis=1)
        correct = best == truth
        genuine = scores.max(axis=1)
        others = scores.copy()
        others[np.arange(len(probe)), truth] = -np.inf
        impostor = others.max(axis=1)
        out[aggregation] = {"top1": float(correct.mean()),
                            **{f"tpr@{f:g}": open_set_tpr(genuine, correct, impostor, f) for f in FPRS}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--model", default="dlib-resnet", help="resolve_embedder name or checkpoint (default dlib-resnet)")
    p.add_argument("--enrolled", default="3,5,10", help="photos enrolled per person, comma-separated")
    p.add_argument("--probes", type=int, default=5, help="probe photos per person")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-identities", type=int, default=None)
    args = p.parse_args(argv)
    from fr_lib.embedders.resolve import resolve_embedder
    from fr_lib.evaluation.pair_verification import embed_paths

    ks = [int(k) for k in args.enrolled.split(",")]
    need = max(ks) + args.probes
    suffixes = {".jpg", ".jpeg", ".png"}
    identities = []
    for d in sorted(q for q in args.root.iterdir() if q.is_dir() and not q.name.startswith(".")):
        photos = sorted(f for f in d.iterdir() if f.suffix.lower() in suffixes and not f.name.startswith("."))
        if len(photos) >= need:
            identities.append(photos[:need])   # the same photos for every k and seed: one embedding pass
    identities = identities[:args.max_identities]
    if len(identities) < 2:
        raise SystemExit(f"need at least 2 identities with >= {need} photos under {args.root}")
    paths = [str(f) for photos in identities for f in photos]
    owner = np.repeat(np.arange(len(identities)), need)
    t0 = time.perf_counter()
    model, meta = resolve_embedder(args.model)
    emb = embed_paths(model, meta, paths, progress=False).astype(np.float32)
    print(f"{len(identities)} identities x {need} photos = {len(paths)} crops embedded with {args.model} in "
          f"{time.perf_counter() - t0:.0f} s; {args.probes} probes per identity, {args.seeds} seed(s)")
    print()
    print("| enrolled per person | aggregation | top-1 accuracy | TPR @ FPR=0.01 | TPR @ FPR=0.1 |")
    print("|---|---|---|---|---|")
    for k in ks:
        runs = [evaluate(emb, owner, k, args.probes, seed) for seed in range(args.seeds)]
        for aggregation in AGGREGATIONS:
            cells = []
            for key in ("top1", "tpr@0.01", "tpr@0.1"):
                values = np.array([r[aggregation][key] for r in runs])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
            print(f"| {k} | {aggregation} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
