"""build_transforms: per-backbone normalisation against the libraries' own definitions; augmentation behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fr_lib.data import build_transforms, denormalize


@pytest.fixture()
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))


def test_facenet_normalisation_is_fixed_image_standardization(image):
    from facenet_pytorch import fixed_image_standardization

    x = build_transforms("facenet", 112, train=False)(image)
    ref = fixed_image_standardization(torch.as_tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1))
    assert x.dtype == torch.float32 and x.shape == (3, 112, 112)
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)


def test_imagenet_normalisation_matches_timm(image):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    x = build_transforms("imagenet", 112, train=False)(image)
    arr = torch.as_tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255
    ref = (arr - torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(denormalize(x, "imagenet"), arr, atol=1e-5, rtol=1e-5)


def test_pil_and_uint8_tensor_inputs_agree(image):
    t = build_transforms("imagenet", 112, train=False)
    u8 = torch.as_tensor(np.array(image)).permute(2, 0, 1).contiguous()
    torch.testing.assert_close(t(image), t(u8))


def test_eval_resizes_to_the_backbone_size(image):
    x = build_transforms("facenet", 160, train=False)(image)
    assert x.shape == (3, 160, 160)
    ref = np.asarray(image.resize((160, 160), Image.BILINEAR), np.float32)
    # antialiased bilinear resize, same up to rounding of the interpolation
    assert np.abs(x.permute(1, 2, 0).numpy() * 128 + 127.5 - ref).mean() < 2.0


def test_train_augmentation_is_random_and_keeps_the_face_aligned(image):
    t = build_transforms("imagenet", 112, train=True)
    torch.manual_seed(0)
    outs = torch.stack([t(image) for _ in range(8)])
    assert outs.shape == (8, 3, 112, 112)
    assert (outs[1:] - outs[:1]).abs().amax(dim=(1, 2, 3)).min() > 0  # differs every draw
    # a horizontally symmetric, constant-colour image changes only by colour jitter: spatial ops are invisible
    flat = Image.new("RGB", (112, 112), (120, 80, 200))
    y = t(flat)
    assert y.std(dim=(1, 2)).max() < 1e-4
    no_aug = build_transforms("imagenet", 112, train=True, augment=False)
    torch.testing.assert_close(no_aug(image), build_transforms("imagenet", 112, train=False)(image))


def test_flip_happens(image):
    t = build_transforms("facenet", 112, train=True)
    ref = build_transforms("facenet", 112, train=False)(image)
    torch.manual_seed(1)
    corr = []
    for _ in range(16):
        x = t(image)
        corr.append(((x - x.mean()) * (ref.flip(-1) - ref.mean())).mean() / (x.std() * ref.std()))
    # some draws are mirrored (high correlation with the flipped reference), some are not
    corr = torch.stack(corr)
    assert (corr > 0.3).any() and (corr < 0.1).any()


def test_unknown_normalisation_lists_choices():
    with pytest.raises(ValueError, match="facenet"):
        build_transforms("vgg", 112, train=False)


def test_unit_normalisation_is_plain_scaling_to_0_1(image):
    """'unit' (the dlib baseline's input): pixel / 255, nothing else."""
    x = build_transforms("unit", 112, train=False)(image)
    ref = torch.as_tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=0)
