"""extract_embeddings: equal to a direct forward pass, flip averaging formula, cache hit/miss behaviour."""
import numpy as np
import pytest
import torch
from torch import nn

from fr_lib.data import FaceFolder, build_transforms
from fr_lib.evaluation.embed import extract_embeddings


class TinyEmbedder(nn.Module):
    """(B, 3, H, W) -> (B, 8) unit rows; counts forward calls; has dropout so eval mode matters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Dropout(0.5), nn.Linear(16, 8))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return nn.functional.normalize(self.net(x), dim=1)


@pytest.fixture(scope="module")
def dataset(synth_root):
    ds = FaceFolder(synth_root, transform=build_transforms("imagenet", 32, train=False))
    ds.samples, ds.targets = ds.samples[:24], ds.targets[:24]
    return ds


def test_matches_direct_forward_in_eval_mode(dataset):
    model = TinyEmbedder().train()
    emb = extract_embeddings(model, dataset, batch_size=5, progress=False)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(emb.embeddings, ref, atol=1e-5)
    assert emb.embeddings.dtype == np.float32 and emb.labels.tolist() == dataset.targets
    assert emb.paths == [p for p, _ in dataset.samples]
    np.testing.assert_allclose(np.linalg.norm(emb.embeddings, axis=1), 1, atol=1e-6)


def test_flip_averages_then_renormalises(dataset):
    model = TinyEmbedder()
    emb = extract_embeddings(model, dataset, flip=True, batch_size=8, progress=False)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        model.eval()
        s = model(x) + model(torch.flip(x, dims=[3]))
    np.testing.assert_allclose(emb.embeddings, (s / s.norm(dim=1, keepdim=True)).numpy(), atol=1e-5)


def test_cache_is_keyed_by_weights_data_and_flip(dataset, tmp_path):
    cache = tmp_path / "emb.npz"
    model = TinyEmbedder()
    first = extract_embeddings(model, dataset, cache_path=cache, progress=False)
    calls = model.calls
    again = extract_embeddings(model, dataset, cache_path=cache, progress=False)
    assert model.calls == calls, "cache hit must not run the model"
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    assert again.paths == first.paths and again.labels.tolist() == first.labels.tolist()
    extract_embeddings(model, dataset, cache_path=cache, flip=True, progress=False)
    assert model.calls > calls, "flip changes the key"
    calls = model.calls
    with torch.no_grad():
        model.net[-1].bias.add_(1.0)
    changed = extract_embeddings(model, dataset, cache_path=cache, progress=False)
    assert model.calls > calls, "new weights change the key"
    assert not np.allclose(changed.embeddings, first.embeddings)
    assert not list(tmp_path.glob("*.tmp"))


def test_shuffled_loader_and_empty_dataset_are_errors(dataset):
    with pytest.raises(ValueError, match="shuffle"):
        extract_embeddings(TinyEmbedder(), torch.utils.data.DataLoader(dataset, shuffle=True), progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract_embeddings(TinyEmbedder(), [], progress=False)
