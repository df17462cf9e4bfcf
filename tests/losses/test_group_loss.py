"""The group loss against a hand-computed example and the paper's replicator update rule."""
import math

import pytest
import torch

from fr_lib.losses import build_criterion
from fr_lib.losses.group import GroupLoss, anchor_mask, pearson_similarity, replicator_dynamics

EMB = [[0.9, 0.1, 0.3], [0.7, 0.4, 0.1], [-0.2, 0.8, 0.5], [0.1, 0.9, -0.4]]
LABELS = [0, 0, 1, 1]
WC = [[1.0, -0.5, 0.2], [-0.3, 0.8, 0.1]]   # classifier weight (C=2, D=3)
BC = [0.1, -0.1]


def _pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [x - ma for x in a], [x - mb for x in b]
    r = sum(x * y for x, y in zip(ca, cb)) / math.sqrt(sum(x * x for x in ca) * sum(y * y for y in cb))
    return max(r, 0.0)


def _hand_loss(scale, temperature, iterations):
    """Priors, anchors, Pearson W and the paper's update x_ih <- x_ih pi_ih / sum_k x_ik pi_ik, pi_ih =
    sum_j w_ij x_jh (Elezi et al. 2020, eq. 4), written out on Python floats."""
    n, c = len(EMB), len(WC)
    logits = [[scale * sum(w * e for w, e in zip(WC[h], EMB[i])) + BC[h] for h in range(c)] for i in range(n)]

    def softmax(row, t):
        ex = [math.exp(v / t) for v in row]
        return [v / sum(ex) for v in ex]

    x = [softmax(row, temperature) for row in logits]
    for i in (0, 2):  # first sample of each class: a labelled anchor with a one-hot prior
        x[i] = [1.0 if h == LABELS[i] else 0.0 for h in range(c)]
    w = [[_pearson(EMB[i], EMB[j]) for j in range(n)] for i in range(n)]
    for _ in range(iterations):
        pi = [[sum(w[i][j] * x[j][h] for j in range(n)) for h in range(c)] for i in range(n)]
        x = [[x[i][h] * pi[i][h] / sum(x[i][k] * pi[i][k] for k in range(c)) for h in range(c)] for i in range(n)]
    nll = sum(-math.log(x[i][LABELS[i]] + 1e-12) for i in range(n)) / n
    ce = sum(-math.log(softmax(logits[i], 1.0)[LABELS[i]]) for i in range(n)) / n
    return nll + ce, x


def _criterion(**kw):
    crit = GroupLoss(num_classes=2, embedding_size=3, **kw)
    with torch.no_grad():
        crit.classifier.weight.copy_(torch.tensor(WC))
        crit.classifier.bias.copy_(torch.tensor(BC))
    return crit


@pytest.mark.parametrize("scale,temperature,iterations", [(16.0, None, 1), (2.0, 0.5, 1), (4.0, 3.0, 3)])
def test_loss_matches_hand_computation(scale, temperature, iterations):
    crit = _criterion(scale=scale, temperature=temperature, num_iterations=iterations)
    want, probs = _hand_loss(scale, scale if temperature is None else temperature, iterations)
    emb, labels = torch.tensor(EMB), torch.tensor(LABELS)
    assert crit(emb, labels).item() == pytest.approx(want, rel=1e-5)
    assert torch.allclose(crit.refined_probabilities(emb, labels), torch.tensor(probs), atol=1e-6)


def test_replicator_step_is_the_papers_rule_and_stays_on_the_simplex():
    g = torch.Generator().manual_seed(0)
    W = pearson_similarity(torch.randn(6, 5, generator=g))
    X = torch.softmax(torch.randn(6, 4, generator=g), dim=1)
    pi = W @ X
    paper = X * pi / (X * pi).sum(dim=1, keepdim=True)      # x_i(h) pi_i(h) / (x_i . pi_i)
    assert torch.allclose(replicator_dynamics(W, X, 1), paper, atol=1e-6)
    X5 = replicator_dynamics(W, X, 5)
    assert torch.allclose(X5.sum(dim=1), torch.ones(6)) and (X5 >= 0).all()
    assert torch.allclose(W.diagonal(), torch.ones(6)) and (W >= 0).all()
    # a one-hot row (a labelled anchor) stays one-hot
    X[0] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert torch.equal(replicator_dynamics(W, X, 3)[0], X[0])


def test_anchor_mask_takes_the_first_samples_of_each_class():
    labels = torch.tensor([3, 1, 3, 1, 3, 2])
    assert anchor_mask(labels, 1).tolist() == [True, True, False, False, False, True]
    assert anchor_mask(labels, 2).tolist() == [True, True, True, True, False, True]
    assert not anchor_mask(labels, 0).any()


def test_registered_with_scale_and_logits_and_learns():
    crit = build_criterion("group", num_classes=4, embedding_size=8, scale=8.0)
    assert isinstance(crit, GroupLoss) and crit.scale == crit.temperature == 8.0
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(2)   # n=4 classes x m=2 samples
    raw = torch.randn(8, 8, requires_grad=True)
    opt = torch.optim.Adam([raw, *crit.parameters()], lr=0.05)
    losses = []
    for _ in range(40):
        loss = crit(torch.nn.functional.normalize(raw, dim=1), labels)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.2 * losses[0]
    logits = crit.logits(torch.nn.functional.normalize(raw, dim=1))
    assert logits.shape == (8, 4) and (logits.argmax(1) == labels).all()


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="num_iterations"):
        GroupLoss(2, 3, num_iterations=0)
