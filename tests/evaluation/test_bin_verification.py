""".bin verification: folds as sklearn's KFold, 10-fold accuracy against an independent exact search, AUC against
sklearn, EER, the flip sum, insightface's grid for comparison, the end-to-end path and target discovery."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from fr_lib.data.bin_sets import load_bin, write_bin
from fr_lib.evaluation.bin_verification import (
    VerificationTargets,
    bin_folds,
    discover_val_targets,
    embed_verification_set,
    load_verification_set,
    pair_cosines,
    score_bin,
    verify_bin,
)


def _pair_embeddings(n_pairs, dim=8, noise=0.9, seed=0):
    """(2N, D) unit rows in pair order and (N,) flags: a same pair shares a centre, a different pair does not."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.normal(size=(n_pairs, dim))
    b = np.where(issame[:, None], a, rng.normal(size=(n_pairs, dim))) + noise * rng.normal(size=(n_pairs, dim))
    e = np.empty((2 * n_pairs, dim))
    e[0::2], e[1::2] = a, b
    return e / np.linalg.norm(e, axis=1, keepdims=True), issame


def _reference_10fold(scores, issame):
    """Independent LFW protocol: sklearn KFold(10) in order; on the 9 training folds try every distinct score as
    the threshold (same if score >= t) from the highest down and keep the first best; apply it to the test fold."""
    accs = []
    for train, test in KFold(10, shuffle=False).split(scores):
        cands = np.r_[np.inf, np.unique(scores[train])[::-1]]
        train_acc = [((scores[train] >= t) == issame[train]).mean() for t in cands]
        t = cands[int(np.argmax(train_acc))]
        accs.append(((scores[test] >= t) == issame[test]).mean())
    return np.mean(accs), np.std(accs)


def _insightface_grid_10fold(emb, issame):
    """insightface calculate_roc: squared distance, thresholds np.arange(0, 4, 0.01), same if dist < t."""
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    grid = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(10, shuffle=False).split(dist):
        t = grid[int(np.argmax([((dist[train] < g) == issame[train]).mean() for g in grid]))]
        accs.append(((dist[test] < t) == issame[test]).mean())
    return np.mean(accs)


@pytest.mark.parametrize("n", [10, 23, 600, 6000])
def test_folds_are_sklearn_kfold_in_order(n):
    folds = bin_folds(n)
    for k, (_, test) in enumerate(KFold(10, shuffle=False).split(np.arange(n))):
        assert np.array_equal(np.flatnonzero(folds == k), test)
    with pytest.raises(ValueError, match="9 pairs"):
        bin_folds(9)


@pytest.mark.parametrize("n_pairs,seed", [(300, 0), (457, 1), (1000, 2)])
def test_score_bin_against_independent_computation(n_pairs, seed):
    emb, issame = _pair_embeddings(n_pairs, seed=seed)
    res = score_bin(emb, issame)
    scores = np.array([emb[2 * k] @ emb[2 * k + 1] for k in range(n_pairs)])
    np.testing.assert_allclose(pair_cosines(emb), scores, atol=1e-12)
    mean, std = _reference_10fold(scores, issame)
    assert 0.6 < mean < 0.99                                      # neither trivial nor chance
    assert res.accuracy == pytest.approx(mean, abs=1e-12) and res.accuracy_std == pytest.approx(std, abs=1e-12)
    assert res.roc_auc == pytest.approx(roc_auc_score(issame, scores), abs=1e-12)
    # EER: where FPR and FNR cross; the best balanced point of the discrete ROC is within one pair of it
    pos, neg = scores[issame], scores[~issame]
    balanced = min(max((neg >= t).mean(), (pos < t).mean()) for t in np.r_[scores, np.inf])
    assert abs(res.eer - balanced) <= 1.0 / min(len(pos), len(neg)) + 1e-12
    fpr_at, fnr_at = (neg >= res.eer_threshold).mean(), (pos < res.eer_threshold).mean()
    assert abs(fpr_at - res.eer) <= 2.0 / len(neg) and abs(fnr_at - res.eer) <= 2.0 / len(pos)
    assert res.n_pairs == n_pairs and res.n_folds == 10 and res.n_matched == int(issame.sum())
    # insightface's 0.01 grid on squared distance (0.005 in cosine) lands within a pair or two per fold
    assert abs(_insightface_grid_10fold(emb, issame) - res.accuracy) <= 0.02


def test_score_bin_rejects_mismatched_input():
    emb, issame = _pair_embeddings(20)
    with pytest.raises(ValueError, match="pairs"):
        score_bin(emb, issame[:-1])
    with pytest.raises(ValueError, match="pair order"):
        score_bin(emb[:-1], issame)


class _Linear(torch.nn.Module):
    """A deterministic, not mirror-symmetric embedder: flattened pixels -> 6-d, L2-normalised."""

    def __init__(self, size):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, 6, generator=g))

    def forward(self, x):
        return torch.nn.functional.normalize(x.flatten(1) @ self.w, dim=1)


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def small_bin(tmp_path):
    """A 10-pair .bin of 16 x 16 PNG images: same pairs are a noisy copy, different pairs unrelated."""
    rng = np.random.default_rng(0)
    imgs, flags = [], []
    for k in range(10):
        a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        same = k % 2 == 0
        b = np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8) if same else \
            rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        imgs += [a, b]
        flags.append(same)
    path = write_bin(tmp_path / "tiny_lfw.bin", [_png(x) for x in imgs], flags)
    return path, np.stack(imgs), np.array(flags)


def test_embedding_is_normalised_sum_of_image_and_mirror(small_bin):
    path, pixels, _ = small_bin
    vset = load_verification_set(path)
    assert vset.name == "tiny_lfw" and np.array_equal(vset.images, pixels) and vset.n_pairs == 10
    model = _Linear(16).train()
    emb = embed_verification_set(model, vset, 16, "unit", batch_size=7)
    assert model.training                                            # the caller's mode is restored
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(x) + model(torch.flip(x, dims=[3])), dim=1).numpy()
        plain = model(x).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    assert np.abs(emb - plain).max() > 1e-2                         # the flip changes something
    np.testing.assert_allclose(embed_verification_set(model, vset, 16, "unit", flip=False), plain, atol=1e-5)


def test_verify_bin_and_targets_end_to_end(small_bin, tmp_path):
    path, pixels, flags = small_bin
    model = _Linear(16)
    meta = {"name": "linear", "image_size": 16, "normalization": "unit"}
    res = verify_bin(model, meta, path, progress=False, cache_path=tmp_path / "cache.npz")
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(x) + model(torch.flip(x, dims=[3])), dim=1).numpy()
    expect = score_bin(ref, flags)
    assert res.accuracy == pytest.approx(expect.accuracy) and res.roc_auc == pytest.approx(expect.roc_auc)
    assert (tmp_path / "cache.npz").is_file()
    assert verify_bin(model, meta, path, progress=False, cache_path=tmp_path / "cache.npz") == res   # cached
    targets = VerificationTargets([path], image_size=16, normalization="unit", batch_size=4)
    assert targets.names == ["tiny_lfw"]
    out = targets(model, "cpu")
    assert out == {"tiny_lfw_accuracy": pytest.approx(res.accuracy)}
    assert targets.summary(out) == f", tiny_lfw acc {res.accuracy:.4f}"


def test_targets_report_nan_for_a_model_that_gives_nan(small_bin, capsys):
    path, _, _ = small_bin

    class _NaN(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 4), math.nan)

    out = VerificationTargets([path], 16, "unit")(_NaN(), "cpu")
    assert math.isnan(out["tiny_lfw_accuracy"]) and "skipped" in capsys.readouterr().out


def test_discover_val_targets(tmp_path, small_bin):
    src = small_bin[0].read_bytes()
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "train.rec").write_bytes(b"")
    for name in ("lfw", "agedb_30", "cfp_fp"):
        (pack / f"{name}.bin").write_bytes(src)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "lfw.bin").write_bytes(src)
    assert discover_val_targets(pack) == [pack / "agedb_30.bin", pack / "cfp_fp.bin", pack / "lfw.bin"]
    assert discover_val_targets(folder) == []                        # a folder of photos: only when listed
    assert discover_val_targets(folder, ("lfw",)) == [folder / "lfw.bin"]
    assert discover_val_targets(pack, ["cfp_fp", str(small_bin[0])]) == [pack / "cfp_fp.bin", small_bin[0]]
    assert discover_val_targets(None, (str(small_bin[0]),)) == [small_bin[0]]
    with pytest.raises(FileNotFoundError, match="'calfw' not found"):
        discover_val_targets(pack, ("lfw", "calfw"))
    with pytest.raises(ValueError, match="share a name"):
        VerificationTargets([pack / "lfw.bin", folder / "lfw.bin"], 16, "unit")


def test_evaluate_bin_sets_table_and_report(small_bin, tmp_path):
    import json

    import pandas as pd

    from fr_lib.evaluation.bin_verification import evaluate_bin_sets, write_bin_report

    path = small_bin[0]
    other = write_bin(tmp_path / "other.bin", load_bin(path)[0][::-1], [True, False] * 5)   # same images, reordered
    models = {"good": _Linear(16), "const": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 4))}
    torch.nn.init.zeros_(models["const"][1].weight)
    torch.nn.init.ones_(models["const"][1].bias)                 # same embedding for every image: chance level

    def resolve(name, device):
        if name == "offline":
            raise RuntimeError("weights not downloadable here")
        return models[name], {"name": name, "image_size": 16, "normalization": "unit"}

    logs = []
    ev = evaluate_bin_sets(["good", "offline", "const"], [path, other], resolve, cache_dir=tmp_path / "cache",
                           progress=False, log=logs.append)
    assert list(ev.results) == ["good", "const"] and ev.skipped == {"offline": "weights not downloadable here"}
    assert ev.sets == {"tiny_lfw": {"path": str(path), "n_pairs": 10}, "other": {"path": str(other), "n_pairs": 10}}
    for name, model in models.items():
        for set_path in (path, other):
            ref = verify_bin(model, {"image_size": 16, "normalization": "unit"}, set_path, progress=False)
            assert ev.results[name][Path(set_path).stem] == ref
    assert any("skipped offline" in line for line in logs)
    paths = write_bin_report(tmp_path / "out", ev)
    df = pd.read_csv(paths["csv"], index_col=0)
    assert list(df.columns) == ["tiny_lfw", "other"] and list(df.index) == ["good", "const"]
    assert df.loc["good", "tiny_lfw"] == pytest.approx(100 * ev.results["good"]["tiny_lfw"].accuracy)
    md = paths["md"].read_text()
    good_row = next(line for line in md.splitlines() if line.startswith("| good |"))
    best = df.max()
    for col, cell in zip(df.columns, good_row.strip("| ").split(" | ")[1:]):
        assert cell.startswith("**") == (df.loc["good", col] == best[col])
    report = json.loads(paths["json"].read_text())
    assert report["skipped"] == ev.skipped and report["models"]["const"]["other"]["n_pairs"] == 10
    with pytest.raises(ValueError, match="no model"):
        write_bin_report(tmp_path / "none", type(ev)({}, {"x": "y"}, {}, {}))


def test_a_set_with_an_undecodable_image_is_a_value_error(tmp_path, small_bin):
    images, issame = load_bin(small_bin[0])
    images[3] = b"\xff\xd8 not really a jpeg"
    bad = write_bin(tmp_path / "bad.bin", images, issame)
    with pytest.raises(ValueError, match=r"bad.bin\[3\].*cannot be evaluated"):
        load_verification_set(bad)


@pytest.mark.parametrize("normalization,size", [("arcface", 16), ("imagenet", 16), ("facenet", 12), ("unit", 20)])
def test_batched_preprocessing_equals_the_eval_transform(normalization, size):
    """The on-device batch preprocessing is build_transforms(normalization, size, train=False) per image (up to the
    uint8 rounding torchvision's resize does on uint8 input)."""
    from fr_lib.data import NORMALIZATIONS, build_transforms
    from fr_lib.evaluation.bin_verification import _preprocess_module

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    with torch.no_grad():
        got = _preprocess_module(torch.nn.Identity(), size, normalization)(x)
    tf = build_transforms(normalization, size, train=False)
    ref = torch.stack([tf(img) for img in x])
    std = min(NORMALIZATIONS[normalization][1])
    tol = 1e-5 if size == 16 else 1.01 / 255 / std          # same size: exact; resized: one uint8 step
    torch.testing.assert_close(got, ref, atol=tol, rtol=0)
