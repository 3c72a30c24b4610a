"""Joint image + mask transforms (torchvision.transforms.v2: masks are resized with nearest
neighbour, padded with IGNORE and never blurred or normalised).

Inputs are HxWx3 uint8 numpy images and HxW uint8 trainId masks (or None); outputs are a
float CHW tensor normalised with ``mean``/``std`` and an int64 HxW mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .labels import IGNORE


@dataclass
class AugmentConfig:
    size: tuple[int, int] = (180, 360)  # (H, W) every frame is first resized to
    scale: tuple[float, float] = (1.0, 1.0)  # random rescale of that size (1,1 = off)
    crop: tuple[int, int] | None = None  # random crop (H, W) after rescaling; None = no crop
    # mmseg's cat_max_ratio (DAFormer's source crops: 0.75): up to 10 crops are drawn until no class
    # covers this share of the crop's labelled pixels; None = off
    hflip: float = 0.5  # probability of a horizontal flip
    cat_max_ratio: float | None = None
    blur: float = 0.0  # probability of a gaussian blur (image only)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class JointTransform:
    """Wraps v2 pipelines so they take and return numpy image/mask pairs: ``pipeline`` transforms
    image and mask together (geometry), then ``photometric`` (if any) the image alone."""

    def __init__(self, pipeline, photometric=None):
        self.pipeline, self.photometric = pipeline, photometric

    def __call__(self, image: np.ndarray, mask: np.ndarray | None):
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        if mask is None:
            img = self.pipeline(img)
        else:
            img, mask = self.pipeline(img, tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
            mask = mask.as_subclass(torch.Tensor).long()
        if self.photometric is not None:
            img = self.photometric(img)
        return img.as_subclass(torch.Tensor), mask


def _to_float(mean, std) -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]


class _Restyle:
    """uint8 image -> restyle(image) / 255 as a float image (a class, not a lambda: workers pickle it)."""

    def __init__(self, restyle):
        self.restyle = restyle

    def __call__(self, img):
        return tv_tensors.Image(self.restyle(img.as_subclass(torch.Tensor)) / 255)


class ClassBalancedCrop(v2.RandomCrop):
    """mmseg's RandomCrop with ``cat_max_ratio``: a crop is drawn again (10 draws at most, the last
    kept) while one class covers ``max_ratio`` or more of its labelled pixels or it holds a single
    class, so that crops of one road or one sky are rarer (DAFormer's GTA5 pipeline, 0.75)."""

    def __init__(self, size: tuple[int, int], max_ratio: float, fill, tries: int = 10):
        super().__init__(size, pad_if_needed=True, fill=fill)
        self.max_ratio, self.tries = max_ratio, tries

    def make_params(self, flat_inputs: list) -> dict:
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        params = super().make_params(flat_inputs)
        if not masks:
            return params
        mask = masks[0].as_subclass(torch.Tensor)
        for _ in range(self.tries - 1):
            left, top = params["left"] - params["padding"][0], params["top"] - params["padding"][1]
            crop = mask[..., max(top, 0):top + params["height"], max(left, 0):left + params["width"]]
            counts = torch.bincount(crop[crop != IGNORE].flatten().long())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.max_ratio:
                break
            params = super().make_params(flat_inputs)
        return params


def train_transform(cfg: AugmentConfig, restyle=None) -> JointTransform:
    """Resize, random rescale, crop and flip (image and mask), then blur and normalise (image).

    ``restyle`` (e.g. FDA on the fly) maps the geometrically augmented uint8 CHW image to a float
    CHW image in 0..255, before blur and normalisation, as in the FDA paper; it is not clipped."""
    h, w = cfg.size
    geometric: list[v2.Transform] = [v2.Resize((h, w), antialias=True)]
    if tuple(cfg.scale) != (1.0, 1.0):
        # RandomResize draws the shorter side; our frames are wider than tall, so that is H.
        lo, hi = int(round(h * cfg.scale[0])), int(round(h * cfg.scale[1]))
        geometric.append(v2.RandomResize(lo, hi + 1, antialias=True))
    if cfg.crop is not None:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
        geometric.append(v2.RandomCrop(tuple(cfg.crop), pad_if_needed=True, fill=fill) if cfg.cat_max_ratio is None
                         else ClassBalancedCrop(tuple(cfg.crop), cfg.cat_max_ratio, fill=fill))
    if cfg.hflip > 0:
        geometric.append(v2.RandomHorizontalFlip(cfg.hflip))
    blur = [v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=cfg.blur)] if cfg.blur > 0 else []
    if restyle is None:
        photometric = blur + _to_float(cfg.mean, cfg.std)
    else:
        photometric = [_Restyle(restyle)] + blur + [v2.Normalize(cfg.mean, cfg.std)]
    return JointTransform(v2.Compose(geometric), v2.Compose(photometric))


def eval_transform(size: tuple[int, int] | None, resize_mask: bool = False,
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> JointTransform:
    """Resize the image to ``size`` (None = keep); keep the mask at full resolution unless
    ``resize_mask`` (then nearest neighbour), since the published protocol scores at full size."""
    norm = v2.Compose(_to_float(mean, std))
    if size is None:
        return JointTransform(norm)
    resize = v2.Resize(tuple(size), antialias=True)

    def pipeline(img, mask=None):
        if mask is None:
            return norm(resize(img))
        if resize_mask:
            img, mask = resize(img, mask)
        else:
            img = resize(img)
        return norm(img), mask

    return JointTransform(pipeline)
