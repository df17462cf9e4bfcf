"""Image transforms: the normalisation each backbone expects plus train-time augmentation.

Inputs may be PIL images or uint8 (3, H, W) tensors (PackedFaces); outputs are float32 (3, image_size, image_size).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

# name -> (mean, std) on images scaled to [0, 1]
NORMALIZATIONS = {
    # timm models trained on ImageNet
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # facenet-pytorch fixed_image_standardization: (x * 255 - 127.5) / 128 == (x - 127.5/255) / (128/255)
    "facenet": ((127.5 / 255,) * 3, (128.0 / 255,) * 3),
    # insightface arcface_torch (IResNet, MobileFaceNet): (x * 255 - 127.5) / 127.5, i.e. [-1, 1]
    "arcface": ((0.5,) * 3, (0.5,) * 3),
    # no normalisation: [0, 1] floats (models that normalise inside, e.g. the dlib ResNet baseline)
    "unit": ((0.0,) * 3, (1.0,) * 3),
}


# training augmentation, shared by build_transforms (per image) and fr_lib.data.batch_augment (per batch)
CROP_SCALE = (0.85, 1.0)        # random resized crop: keeps aligned crops aligned
CROP_RATIO = (0.95, 1.05)
JITTER = 0.2                    # colour jitter: brightness, contrast and saturation


def build_transforms(normalization: str, image_size: int, train: bool, augment: bool = True) -> v2.Compose:
    """Eval: resize to image_size x image_size, scale to [0, 1], normalise.
    Train (with ``augment``): small random crop/scale (scale 0.85-1, aspect 0.95-1.05, keeps aligned crops
    aligned), horizontal flip, colour jitter (brightness/contrast/saturation 0.2), then the same normalisation."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[normalization]
    ops = [v2.ToImage()]
    if train and augment:
        ops += [v2.RandomResizedCrop(image_size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER)]
    else:
        ops += [v2.Resize((image_size, image_size), antialias=True)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def denormalize(x: torch.Tensor, normalization: str) -> torch.Tensor:
    """Invert the normalisation: (…, 3, H, W) normalised floats -> [0, 1] floats (for display)."""
    mean, std = NORMALIZATIONS[normalization]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * s + m).clamp(0, 1)
