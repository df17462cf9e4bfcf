"""fr_lib.losses.diagnostics against brute-force formulas on tiny embeddings."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fr_lib.losses import build_criterion
from fr_lib.losses import diagnostics as dg


def test_centre_angles_exact():
    e = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    centres = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    a = dg.centre_angles(e, np.array([0, 0, 1]), centres)
    np.testing.assert_allclose(a.target, [0.0, 90.0, 45.0], atol=1e-9)
    np.testing.assert_allclose(a.nearest_other, [90.0, 0.0, 45.0], atol=1e-9)


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ce_scale_curve_and_logits_are_the_classifier_at_that_scale():
    rng = np.random.default_rng(0)
    e, y = _unit(rng, 20, 8), rng.integers(0, 5, 20)
    torch.manual_seed(0)
    crit = build_criterion("ce", 5, 8, scale=4.0).eval()
    curve = dg.ce_scale_curve(e, y, crit, [1.0, 4.0])
    with torch.no_grad():
        want = float(crit(torch.from_numpy(e), torch.from_numpy(y)))
        w, b = crit.classifier.weight.double().numpy(), crit.classifier.bias.double().numpy()
    assert curve.loss[1] == pytest.approx(want, rel=1e-6)
    z = e.astype(np.float64) @ w.T * 1.0 + b                       # scale 1 by hand
    nll = -(z[np.arange(20), y] - np.log(np.exp(z).sum(1)))
    assert curve.loss[0] == pytest.approx(nll.mean(), rel=1e-5)
    assert curve.accuracy[0] == pytest.approx(np.mean(z.argmax(1) == y))
    logits = dg.true_class_logits(e, y, crit)
    z4 = e.astype(np.float64) @ w.T * 4.0 + b
    np.testing.assert_allclose(logits.target, z4[np.arange(20), y], rtol=1e-5)
    other = np.where(np.eye(5, dtype=bool)[y], -np.inf, z4).max(1)
    np.testing.assert_allclose(logits.best_other, other, rtol=1e-5)


@pytest.mark.parametrize("mining", ["all", "semi_hard", "batch_hard"])
def test_active_triplets_brute_force(mining):
    rng = np.random.default_rng(1)
    p, k, margin = 4, 3, 0.3
    e, y = _unit(rng, p * k, 4), np.repeat(np.arange(p), k)
    out = dg.active_triplets(e, y, margin, mining, batch_size=p * k, samples_per_class=k)
    assert len(out) == 1                                            # one batch holding every image
    d = np.linalg.norm(e[:, None] - e[None], axis=2)
    trip = [(a, q, n) for a, q, n in itertools.permutations(range(p * k), 3)
            if y[a] == y[q] and y[a] != y[n]]
    assert out.triplets[0] == len(trip) == p * k * (k - 1) * (p - 1) * k
    if mining == "all":
        mined = trip
    elif mining == "semi_hard":
        mined = [t for t in trip if d[t[0], t[1]] < d[t[0], t[2]] < d[t[0], t[1]] + margin]
    else:                                                           # hardest positive and negative per anchor
        mined = [(a, int(np.argmax(np.where(y == y[a], d[a], -1))), int(np.argmin(np.where(y != y[a], d[a], 9))))
                 for a in range(p * k)]
    gaps = np.array([d[a, n] - d[a, q] for a, q, n in mined])
    assert out.mined[0] == len(mined)
    assert out.active[0] == int((margin - gaps > 1e-6).sum()) == int((margin - np.array(out.gap[0]) > 0).sum())
    np.testing.assert_allclose(sorted(out.gap[0]), sorted(gaps), atol=1e-5)
    with pytest.raises(ValueError, match="samples_per_class"):
        dg.active_triplets(e, y, margin, mining, batch_size=p * k, samples_per_class=1)


def test_loss_settings_and_load_criterion(tmp_path):
    import config
    from fr_lib.training.checkpoint import save_checkpoint

    arc = SimpleNamespace(name="arcface", margin=None, scale=16.0)
    assert dg.loss_settings(arc) == {"margin": 0.5, "scale": 16.0}
    cfg = config.get_experiment("arcface-efficientnet", "tiny")
    torch.manual_seed(3)
    crit = build_criterion(cfg.loss, 6, cfg.model.embedding_size)
    save_checkpoint(tmp_path / "last.pt", {"model": {}, "criterion": crit.state_dict(), "config": cfg.to_dict(),
                                           "metrics": {"classes": [f"id{i}" for i in range(6)]}})
    loaded = dg.load_criterion(tmp_path / "last.pt", cfg.loss)
    torch.testing.assert_close(loaded.weight, crit.weight)
    assert loaded.loss.margin == pytest.approx(dg.loss_settings(cfg.loss)["margin"])   # pml keeps radians inside
