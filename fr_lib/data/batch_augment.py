"""Training augmentation of whole uint8 batches on the training device (kornia), so that loader workers only read
and collate pixels: per-image torchvision transforms in the workers deliver ~265 images/s per CPU core at 112 px
(benchmarks/input_pipeline.py), a third of what one bf16 EfficientNet-B0 step consumes on an H100/H200.

    >>> aug = BatchAugment("imagenet", image_size=112).to("cuda")
    >>> x = aug(uint8_batch.to("cuda"))        # (B, 3, H, W) uint8 -> (B, 3, 112, 112) float32, normalised

Same augmentation as fr_lib.data.build_transforms(train=True): random resized crop (scale 0.85-1, aspect
0.95-1.05), horizontal flip, colour jitter (brightness / contrast / saturation 0.2), per image, then the
backbone's normalisation. Random parameters come from torch's global CPU generator (kornia's default), so a
resumed run (fr_lib.training.checkpoint restores that state) draws the same augmentations.
"""
from __future__ import annotations

import torch
from torch import nn

from fr_lib.data.transforms import CROP_RATIO, CROP_SCALE, JITTER, NORMALIZATIONS


class BatchAugment(nn.Module):
    def __init__(self, normalization: str, image_size: int, augment: bool = True):
        super().__init__()
        import kornia.augmentation as K

        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[normalization]
        self.image_size = int(image_size)
        self.augment = augment
        self.ops = nn.Sequential(
            K.RandomResizedCrop((image_size, image_size), scale=CROP_SCALE, ratio=CROP_RATIO),
            K.RandomHorizontalFlip(),
            K.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER, p=1.0),
        ) if augment else None
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchAugment expects a (B, 3, H, W) uint8 batch, got {tuple(images.shape)} "
                             f"{images.dtype}")
        x = images.float().div_(255.0)
        if self.ops is not None:
            x = self.ops(x).clamp_(0.0, 1.0)
        elif x.shape[-2:] != (self.image_size, self.image_size):
            x = nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True,
                                          align_corners=False)
        return (x - self.mean) / self.std


def uint8_transform(image_size: int):
    """Per-image part left in the loader when BatchAugment runs on the device: decode to a uint8 (3, S, S) tensor
    (S = image_size; packed crops already have that size and pass through)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)])
