"""The learned pair classifier ('bce'): loss and gradients against a hand-computed example, balance, loading."""
import math

import pytest
import torch

from fr_lib.losses import build_criterion
from fr_lib.losses.pair_classifier import PairClassifierLoss, load_pair_classifier
from fr_lib.training.checkpoint import save_checkpoint

EMB = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
LABELS = [0, 0, 1, 1]
W, B = [-1.5, -0.5], 0.7


def _sig(z):
    return 1 / (1 + math.exp(-z))


def _hand(emb, labels):
    """Loss and d loss / d embeddings, d loss / d head weight, d loss / d bias by the chain rule on floats."""
    pairs = [(i, j) for i in range(len(emb)) for j in range(i + 1, len(emb))]
    pos = [p for p in pairs if labels[p[0]] == labels[p[1]]]
    neg = [p for p in pairs if labels[p[0]] != labels[p[1]]]
    g_emb = [[0.0, 0.0] for _ in emb]
    g_w, g_b, loss = [0.0, 0.0], 0.0, 0.0
    for group, y in ((pos, 1.0), (neg, 0.0)):
        weight = 0.5 / len(group)           # each half of the loss is a mean over its pairs
        for i, j in group:
            d = [emb[i][k] - emb[j][k] for k in range(2)]
            z = B + sum(W[k] * abs(d[k]) for k in range(2))
            p = _sig(z)
            loss += weight * -(y * math.log(p) + (1 - y) * math.log(1 - p))
            dz = weight * (p - y)          # d BCE / d logit = sigmoid(z) - y
            g_b += dz
            for k in range(2):
                g_w[k] += dz * abs(d[k])
                s = math.copysign(1.0, d[k]) if d[k] else 0.0
                g_emb[i][k] += dz * W[k] * s
                g_emb[j][k] -= dz * W[k] * s
    return loss, g_emb, g_w, g_b


def _criterion():
    crit = build_criterion("bce", num_classes=0, embedding_size=2)
    with torch.no_grad():
        crit.head.weight.copy_(torch.tensor([W]))
        crit.head.bias.fill_(B)
    return crit


def test_loss_and_gradients_match_hand_computation():
    crit = _criterion()
    emb = torch.tensor(EMB, requires_grad=True)
    loss = crit(emb, torch.tensor(LABELS))
    loss.backward()
    want_loss, want_emb, want_w, want_b = _hand(EMB, LABELS)
    assert loss.item() == pytest.approx(want_loss, abs=1e-6)
    assert torch.allclose(emb.grad, torch.tensor(want_emb), atol=1e-6)
    assert torch.allclose(crit.head.weight.grad, torch.tensor([want_w]), atol=1e-6)
    assert crit.head.bias.grad.item() == pytest.approx(want_b, abs=1e-6)


def test_positives_and_negatives_weigh_half_each():
    # 2 positive pairs and 4 negative pairs: an unweighted mean would give the negatives 2/3 of the loss
    crit = _criterion()
    emb, labels = torch.tensor(EMB), torch.tensor(LABELS)
    i, j = torch.triu_indices(4, 4, offset=1)
    p = crit.pair_probability(emb[i], emb[j])
    same = labels[i] == labels[j]
    expected = 0.5 * -(p[same].log().mean()) + 0.5 * -((1 - p[~same]).log().mean())
    assert torch.allclose(crit(emb, labels), expected, atol=1e-6)
    # batch without a positive pair: the negatives' mean alone (no NaN from an empty mean)
    only_neg = crit(emb[[0, 2]], torch.tensor([0, 1]))
    assert torch.isfinite(only_neg) and only_neg.item() == pytest.approx(-math.log(1 - p[1].item()), abs=1e-6)


def test_pair_probability_broadcasts_and_initial_head_orders_pairs():
    crit = PairClassifierLoss(embedding_size=128)
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(50, 128, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(50, 128, generator=g), dim=1)
    same, rand = crit.pair_probability(a, a), crit.pair_probability(a, b)
    assert torch.allclose(same, torch.full((50,), torch.sigmoid(torch.tensor(4 / math.sqrt(math.pi))).item()))
    assert 0.05 < rand.mean().item() < 0.2  # init: random unit vectors score about sigmoid(-2.3) = 0.09
    matrix = crit.pair_probability(a[:, None], b[None])
    assert matrix.shape == (50, 50) and torch.allclose(matrix.diagonal(), rand, atol=1e-6)


def test_training_separates_identities():
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    labels = torch.arange(4).repeat_interleave(4)
    raw = (centres[labels] + 0.8 * torch.randn(16, 16)).requires_grad_(True)
    crit = PairClassifierLoss(16)
    opt = torch.optim.Adam([raw, *crit.parameters()], lr=0.05)
    first = None
    for _ in range(60):
        loss = crit(torch.nn.functional.normalize(raw, dim=1), labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    emb = torch.nn.functional.normalize(raw, dim=1).detach()
    p = crit.pair_probability(emb[:, None], emb[None])
    same = labels[:, None] == labels[None]
    assert p[same].min() > p[~same].max()


def test_load_pair_classifier_from_checkpoint(tmp_path):
    crit = _criterion()
    cfg = {"loss": {"name": "bce"}, "model": {"embedding_size": 2}}
    save_checkpoint(tmp_path / "best.pt", {"model": {}, "criterion": crit.state_dict(), "config": cfg})
    head = load_pair_classifier(tmp_path / "best.pt")
    e1, e2 = torch.tensor(EMB[:2]), torch.tensor(EMB[2:])
    assert torch.allclose(head.pair_probability(e1, e2), crit.pair_probability(e1, e2))
    save_checkpoint(tmp_path / "ce.pt", {"model": {}, "criterion": {}, "config": {**cfg, "loss": {"name": "ce"}}})
    with pytest.raises(ValueError, match="'ce', not 'bce'.*cosine"):
        load_pair_classifier(tmp_path / "ce.pt")


def test_trained_bce_run_scores_pairs_with_its_head_and_id_rate_keeps_cosine(synth_root, tmp_path, capsys):
    """A tiny 'bce' run trains through the one loop; `fr eval --pairs --score pair-probability` scores each pair
    with the head from the checkpoint's criterion state (a model without a head is a skipped row); the ID-rate
    table notes that its row uses cosine similarity."""
    import json

    import numpy as np

    import config
    from fr_lib.cli import main
    from fr_lib.data.lfw_pairs import read_lfw_pairs, write_lfw_pairs
    from fr_lib.evaluation.metrics import roc_auc
    from fr_lib.evaluation.pair_verification import embed_paths
    from fr_lib.training.checkpoint import load_embedder
    from fr_lib.training.loop import train

    cfg = config.get_experiment("bce-efficientnet", "tiny", **{
        "data.root": str(synth_root), "model.backbone": "mobilenetv3_small_100", "data.image_size": 32,
        "train.output_dir": str(tmp_path / "run")})
    assert cfg.loss.name == "bce" and cfg.data.samples_per_class == 4
    train(cfg, progress=False)
    ckpt = tmp_path / "run" / "last.pt"
    pairs_txt = tmp_path / "pairs.txt"
    write_lfw_pairs(synth_root, pairs_txt, folds=4, pairs_per_fold=8, seed=0)
    out = tmp_path / "out"
    assert main(["eval", "--experiments", f"{ckpt},random-mobilenetv3_small_100", "--pairs", str(pairs_txt),
                 "--data", str(synth_root), "--out", str(out), "--device", "cpu", "--score",
                 "pair-probability", "--no-cache"]) == 0
    assert "skipped random-mobilenetv3_small_100" in capsys.readouterr().err
    got = json.loads((out / "verification.json").read_text())[str(ckpt)]
    pairs = read_lfw_pairs(pairs_txt, synth_root)
    model, meta = load_embedder(ckpt)
    emb = embed_paths(model, meta, [p for pair in pairs for p in (pair.path1, pair.path2)], progress=False)
    head = load_pair_classifier(ckpt)
    with torch.no_grad():
        prob = head.pair_probability(torch.from_numpy(emb[0::2]), torch.from_numpy(emb[1::2])).numpy()
    issame = np.array([p.issame for p in pairs])
    assert got["score"] == "pair-probability"
    assert got["roc_auc"] == pytest.approx(roc_auc(prob[issame], prob[~issame]), abs=1e-9)
    assert main(["eval", "--experiments", str(ckpt), "--data", str(synth_root), "--out", str(tmp_path / "idr"),
                 "--device", "cpu", "--fprs", "0.1", "--no-threshold"]) == 0
    notes = json.loads((tmp_path / "idr" / "results.json").read_text())["notes"]
    assert "cosine similarity" in notes[str(ckpt)]
