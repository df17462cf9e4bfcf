"""Each criterion against its formula on tiny hand-built embeddings."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fr_lib.losses import build_criterion
from fr_lib.losses.build import loss_options

torch.manual_seed(0)
EMB = torch.tensor([[1.0, 0.2], [0.8, 0.5], [-0.3, 1.0], [-0.5, 0.7], [0.1, -1.0], [0.4, -0.9]])
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
W = torch.tensor([[1.0, 0.1], [-0.2, 1.0], [0.3, -1.0]])  # (C, D) class centres


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_ce_matches_label_smoothed_cross_entropy():
    crit = build_criterion("ce", num_classes=3, embedding_size=2, label_smoothing=0.1, scale=2.0)
    with torch.no_grad():
        crit.classifier.weight.copy_(W)
        crit.classifier.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    logits = 2.0 * EMB @ W.T + torch.tensor([0.1, -0.2, 0.3])
    logp = logits.log_softmax(1)
    eps = 0.1
    expected = (-(1 - eps) * logp[torch.arange(6), LABELS] - eps * logp.mean(1)).mean()
    assert torch.allclose(crit(EMB, LABELS), expected, atol=1e-6)
    assert torch.allclose(crit.logits(EMB), logits, atol=1e-6)


def _margin_ce(cos, labels, target_logit):
    logits = cos.clone()
    idx = torch.arange(len(labels))
    logits[idx, labels] = target_logit(cos[idx, labels])
    return F.cross_entropy(logits, labels)


def test_arcface_formula_radians_and_default_units():
    crit = build_criterion("arcface", num_classes=3, embedding_size=2)
    assert crit.loss.margin == pytest.approx(0.5) and crit.loss.scale == 64.0  # pml stores radians after init
    s, m = 10.0, 0.3
    crit = build_criterion("arcface", num_classes=3, embedding_size=2, margin=m, scale=s)
    with torch.no_grad():
        crit.loss.W.copy_(W.T)
    cos = _unit(EMB) @ _unit(W).T

    def target(c):
        theta = torch.acos(c.clamp(-1, 1))
        return torch.where(theta <= math.pi - m, torch.cos(theta + m), c - m * math.sin(m))

    assert torch.allclose(crit(EMB, LABELS), _margin_ce(s * cos, LABELS, lambda c: s * target(c / s)), atol=1e-5)
    assert torch.allclose(crit.logits(EMB), s * cos, atol=1e-5)


def test_cosface_formula():
    s, m = 8.0, 0.35
    crit = build_criterion("cosface", num_classes=3, embedding_size=2, scale=s)
    with torch.no_grad():
        crit.loss.W.copy_(W.T)
    cos = _unit(EMB) @ _unit(W).T
    assert torch.allclose(crit(EMB, LABELS), F.cross_entropy(s * (cos - m * F.one_hot(LABELS, 3)), LABELS),
                          atol=1e-5)


def test_margin_softmax_keeps_fp32_weights_under_autocast():
    crit = build_criterion("arcface", num_classes=3, embedding_size=2, scale=4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(EMB.bfloat16(), LABELS)
        crit.logits(EMB.bfloat16())
    assert crit.loss.W.dtype == torch.float32 and loss.dtype == torch.float32
    loss.backward()
    assert crit.loss.W.grad.dtype == torch.float32


def _dist(e):
    return torch.cdist(_unit(e), _unit(e))


def _triplets(labels):
    n = len(labels)
    for a, p, q in itertools.product(range(n), repeat=3):
        if a != p and labels[a] == labels[p] and labels[a] != labels[q]:
            yield a, p, q


def _avg_nonzero(losses):
    losses = torch.stack(losses)
    nz = losses[losses > 0]
    return nz.mean() if len(nz) else torch.tensor(0.0)


def test_triplet_batch_hard_formula():
    margin = 0.8
    crit = build_criterion("triplet", 0, 2, margin=margin, mining="batch_hard")
    d = _dist(EMB)
    same = LABELS[:, None] == LABELS[None]
    losses = []
    for a in range(6):
        pos = d[a][same[a] & (torch.arange(6) != a)].max()
        neg = d[a][~same[a]].min()
        losses.append(F.relu(pos - neg + margin))
    assert torch.allclose(crit(EMB, LABELS), _avg_nonzero(losses), atol=1e-5)


def test_triplet_semi_hard_and_all_formula():
    margin = 0.5
    emb = torch.randn(9, 3, generator=torch.Generator().manual_seed(1))  # overlapping classes: semi-hard exist
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    d = _dist(emb)
    all_losses = [F.relu(d[a, p] - d[a, n] + margin) for a, p, n in _triplets(labels)]
    semi = [F.relu(d[a, p] - d[a, n] + margin) for a, p, n in _triplets(labels)
            if d[a, p] < d[a, n] < d[a, p] + margin]
    assert 0 < len(semi) < len(all_losses)
    crit_all = build_criterion("triplet", 0, 3, margin=margin, mining="all")
    crit_semi = build_criterion("triplet", 0, 3, margin=margin, mining="semi_hard")
    assert torch.allclose(crit_all(emb, labels), _avg_nonzero(all_losses), atol=1e-5)
    assert torch.allclose(crit_semi(emb, labels), _avg_nonzero(semi), atol=1e-5)


def test_contrastive_formula():
    margin = 1.2
    crit = build_criterion("contrastive", 0, 2, margin=margin)
    d = _dist(EMB)
    pos, neg = [], []
    for i, j in itertools.permutations(range(6), 2):
        (pos if LABELS[i] == LABELS[j] else neg).append(F.relu(d[i, j]) if LABELS[i] == LABELS[j]
                                                         else F.relu(margin - d[i, j]))
    assert torch.allclose(crit(EMB, LABELS), _avg_nonzero(pos) + _avg_nonzero(neg), atol=1e-5)
    assert not hasattr(crit, "logits")


def test_build_criterion_rejects_bad_names_and_options():
    with pytest.raises(ValueError, match="arcface"):
        build_criterion("arcfase", 3, 2)
    with pytest.raises(ValueError, match="label_smoothing"):
        build_criterion("arcface", 3, 2, label_smoothing=0.1)
    with pytest.raises(ValueError, match="mining"):
        build_criterion("triplet", 3, 2, mining="hardest")
    with pytest.raises(ValueError, match="no options"):
        build_criterion("bce", 0, 2, margin=0.3)
    # None means "the loss's default", whatever the loss
    assert build_criterion("triplet", 3, 2, margin=None, scale=None).loss.margin == 0.2


def test_loss_options_come_from_the_factory_signature():
    assert loss_options("arcface") == {"margin": 0.5, "scale": 64.0}
    assert loss_options("ce") == {"label_smoothing": 0.0, "scale": 1.0}
    assert loss_options("bce") == {}


def test_build_criterion_from_a_loss_config():
    from config import LossConfig

    crit = build_criterion(LossConfig("arcface", margin=0.2, scale=16.0), 3, 2)
    assert crit.loss.margin == pytest.approx(0.2) and crit.loss.scale == 16.0   # pml keeps radians
    default = build_criterion(LossConfig("arcface"), 3, 2)      # margin/scale None: the loss's own defaults
    assert default.loss.margin == pytest.approx(0.5) and default.loss.scale == 64.0
    ce = build_criterion(LossConfig("ce", label_smoothing=0.1), 3, 2)
    assert (ce.label_smoothing, ce.scale) == (0.1, 1.0)
    triplet = build_criterion(LossConfig("triplet", margin=0.1, mining="all"), 0, 2)
    assert triplet.loss.margin == 0.1 and triplet.miner is None
    with pytest.raises(ValueError, match="margin"):
        build_criterion(LossConfig("ce", margin=0.3), 3, 2)   # a field the loss does not use, set
    assert build_criterion(LossConfig("arcface"), 3, 2, scale=8.0).loss.scale == 8.0   # options win


def test_a_new_loss_registers_with_one_entry(monkeypatch):
    from types import SimpleNamespace

    from fr_lib.losses import LOSSES

    def toy(num_classes, embedding_size, temperature: float = 1.0):
        return torch.nn.Linear(embedding_size, max(num_classes, 1)).requires_grad_(False), temperature

    monkeypatch.setitem(LOSSES, "toy", toy)
    assert build_criterion(SimpleNamespace(name="toy", temperature=None, margin=None), 3, 2)[1] == 1.0
    assert build_criterion(SimpleNamespace(name="toy", temperature=0.5, margin=None), 3, 2)[1] == 0.5
    with pytest.raises(ValueError, match="temperature"):
        build_criterion(SimpleNamespace(name="toy", margin=0.3), 3, 2)


def test_every_registered_experiment_builds_its_criterion():
    import config

    for cfg in config.EXPERIMENTS.values():
        crit = build_criterion(cfg.loss, 4, 8)
        assert isinstance(crit, torch.nn.Module), cfg.name
