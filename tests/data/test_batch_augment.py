"""On-device batch augmentation (fr_lib.data.BatchAugment): the eval path is exactly the per-image normalisation,
the random path is per image, deterministic under torch's seed, and a training run using it resumes exactly."""
import numpy as np
import pytest
import torch

import config
from fr_lib.data.batch_augment import BatchAugment, uint8_transform
from fr_lib.data.transforms import NORMALIZATIONS, build_transforms
from fr_lib.training.loop import train


def _batch(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
def test_without_augmentation_equals_the_per_image_eval_transform(normalization):
    x = _batch()
    out = BatchAugment(normalization, image_size=32, augment=False)(x)
    ref = torch.stack([build_transforms(normalization, 32, train=False)(img) for img in x])
    mean, std = NORMALIZATIONS[normalization]
    manual = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, manual, rtol=0, atol=1e-5)


def test_augmentation_is_per_image_and_reproducible_under_the_torch_seed():
    img = torch.zeros(3, 48, 48, dtype=torch.uint8)
    img[:, :, :12] = 255                                   # a bright band on the left: flips are visible
    x = img.expand(64, -1, -1, -1).contiguous()
    aug = BatchAugment("unit", image_size=40)
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    assert torch.equal(a, b) and a.shape == (64, 3, 40, 40)
    assert a.min() >= 0 and a.max() <= 1                   # 'unit': [0, 1] after colour jitter
    left, right = a[..., :, :10].mean(dim=(1, 2, 3)), a[..., :, -10:].mean(dim=(1, 2, 3))
    flipped = (right > left).float().mean().item()
    assert 0.25 < flipped < 0.75                           # each image draws its own flip
    assert len({round(v, 4) for v in a.mean(dim=(1, 2, 3)).tolist()}) > 32   # and its own crop / jitter


def test_rejects_anything_but_a_uint8_batch():
    aug = BatchAugment("imagenet", image_size=32)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="normalization"):
        BatchAugment("nope", 32)


def test_uint8_transform_resizes_pil_and_passes_packed_crops_through():
    from PIL import Image

    pil = Image.fromarray(np.full((50, 70, 3), 200, np.uint8))
    t = uint8_transform(32)
    out = t(pil)
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    x = _batch(1)[0]
    assert torch.equal(t(x), x)


def _cfg(root, out, epochs, packed):
    return config.get_experiment("ce-efficientnet", "tiny", **{
        "data.root": str(root), "data.image_size": 32, "data.batch_augment": True, "data.packed_cache": packed,
        "data.cache_dir": str(out.parent / "packed"), "data.max_images_per_identity": 6,
        "model.backbone": "resnet10t", "model.embedding_size": 32, "train.epochs": epochs,
        "train.output_dir": str(out)})


@pytest.mark.parametrize("packed", [True, False])
def test_training_with_batch_augment_resumes_bit_identically(packed, synth_root, tmp_path):
    ref = train(_cfg(synth_root, tmp_path / "ref", 2, packed), progress=False)
    train(_cfg(synth_root, tmp_path / "cut", 1, packed), progress=False)
    resumed = train(_cfg(synth_root, tmp_path / "cut", 2, packed), resume=True, progress=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for (k, v), w in zip(ref["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(v, w), k
    assert ref["history"][-1]["train_loss"] == resumed["history"][-1]["train_loss"]
