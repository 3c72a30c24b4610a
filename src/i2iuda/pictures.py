"""Image grids for previews, training snapshots and reports."""
from __future__ import annotations

import cv2
import numpy as np
import torch



def fit(image: np.ndarray, height: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to a given height, keeping its aspect ratio."""
    h, w = image.shape[:2]
    if h == height:
        return image
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def grid(rows: list[list[np.ndarray]], height: int | None = None, pad: int = 2,
         captions: list[str] | None = None) -> np.ndarray:
    """Tile rows of HxWx3 uint8 images (all resized to one height) with white padding.
    ``captions`` label the columns in a strip above the first row."""
    height = height or rows[0][0].shape[0]
    tiles = [[fit(im, height) for im in row] for row in rows]
    width = max(sum(t.shape[1] for t in row) + pad * (len(row) + 1) for row in tiles)
    lines = []
    for row in tiles:
        line = np.full((height + pad, width, 3), 255, np.uint8)
        x = pad
        for t in row:
            line[pad:, x:x + t.shape[1]] = t
            x += t.shape[1] + pad
        lines.append(line)
    out = np.concatenate(lines + [np.full((pad, width, 3), 255, np.uint8)], 0)
    if captions:
        strip = np.full((16, width, 3), 255, np.uint8)
        x = pad
        for cap, t in zip(captions, tiles[0]):
            cv2.putText(strip, cap, (x + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
            x += t.shape[1] + pad
        out = np.concatenate([strip, out], 0)
    return out


def tensor_rows(cols: list[torch.Tensor], captions: list[str], n: int) -> np.ndarray:
    """A grid whose row i shows frame i of every column (normalised NCHW tensors, any sizes)."""
    imgs = [denormalize(c[:n]) for c in cols]
    return grid([[im[i] for im in imgs] for i in range(min(n, len(imgs[0])))], captions=captions)


def denormalize(x: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """NCHW or CHW normalised float tensor -> NHWC/HWC uint8 numpy, for pictures."""
    m = torch.tensor(mean, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device).view(-1, 1, 1)
    y = (x.detach().float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return y.movedim(-3, -1).cpu().numpy()
