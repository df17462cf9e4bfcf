"""A pretrained baseline's 10-fold pair accuracy with its native preprocessing vs on fr_lib's aligned crops.

    python benchmarks/baseline_preprocessing.py --pairs PAIRS.txt --aligned ALIGNED/ --raw RAW/ [--model dlib-resnet]

PAIRS.txt: any LFW View-2 format pairs file whose names resolve under ALIGNED/ (`fr align RAW/ ALIGNED/` output;
`fr recipe` writes one of held-out identities). RAW/: the folder the crops were aligned from. Prints, per
preprocessing, 10-fold accuracy ± std, EER and ROC-AUC, and the difference native - crops (the baseline, e.g.
dlib's ResNet, is the named reference: its own pipeline is the number it should be credited with).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True)
    p.add_argument("--aligned", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--model", default="dlib-resnet")
    args = p.parse_args(argv)

    from fr_lib.data.lfw_pairs import read_lfw_pairs
    from fr_lib.embedders import resolve_embedder
    from fr_lib.evaluation.pair_verification import pair_scores, score_pairs

    model, meta = resolve_embedder(args.model)
    pairs = read_lfw_pairs(args.pairs, args.aligned)
    issame, folds = [q.issame for q in pairs], [q.fold for q in pairs]
    rows = {}
    for label, raw in (("crops", None), ("native", args.raw)):
        info: dict = {}
        t0 = time.perf_counter()
        scores = pair_scores(model, meta, pairs, raw_root=raw, native_info=info, progress=False)
        rows[label] = (score_pairs(scores, issame, folds), time.perf_counter() - t0, info)
    print(f"{args.model} on {len(pairs)} pairs ({args.pairs})")
    print("| preprocessing | 10-fold accuracy | EER | ROC-AUC | seconds | fallbacks to crops |")
    print("|---|---|---|---|---|---|")
    for label, (r, secs, info) in rows.items():
        fb = len(info.get("fallbacks", [])) if label == "native" else ""
        print(f"| {label} | {r.accuracy:.4f} ± {r.accuracy_std:.4f} | {r.eer:.4f} | {r.roc_auc:.4f} | "
              f"{secs:.0f} | {fb} |")
    native, crops = rows["native"][0], rows["crops"][0]
    print(f"native - crops: accuracy {native.accuracy - crops.accuracy:+.4f}, EER {native.eer - crops.eer:+.4f}, "
          f"ROC-AUC {native.roc_auc - crops.roc_auc:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
