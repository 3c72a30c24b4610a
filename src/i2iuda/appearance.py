"""How translated frames look, measured on sets of frames (HxWx3 uint8 RGB arrays):

checkerboard_db   the spectral peaks of a checkerboard: the mean power spectrum of the frames'
                  luminance at the 9 frequencies (k H/4, l W/4), k, l in 1..3, where the two x2
                  up-samplings of a ResNet generator put a two-dimensional pattern of period 2 or 4
                  px, against the median power of each one's 5x5 neighbourhood in the spectrum, in
                  dB (10 log10 of the ratio), averaged over the 9. A natural frame's spectrum is
                  smooth there (about 0 dB: the target's own frames are the floor); a visible
                  checkerboard is several dB. (The axis-aligned frequencies, k or l 0, are left out:
                  stripes and textures of the content, bricks and windows, peak there too.)
colour            the frames' mean CIE L*a*b* (L* 0..100, a* green-red, b* blue-yellow) and mean
                  chroma C* = sqrt(a*^2 + b*^2) (saturation), over all pixels.
colour_shift      of one set against another (translated against the target's frames): the cast
                  |(delta a*, delta b*)| of the mean colour, its hue angle (0 red/magenta, 90
                  yellow, 180 green, 270 blue) and the chroma and lightness differences. A cast
                  is visible from about CAST_JND (a*b* units; the target's own val frames against
                  its train frames give the floor).
class_colour      per class: the mean L*, a*, b* and chroma of the pixels its labels give that class.
class_cast        of one set's class colours against another's: per class present in both, the distance
                  of their mean a*b*, averaged with the weights of each class's share of the set's
                  pixels (and its lightness and chroma differences, so weighted). The cast of the whole
                  frames' mean colour cannot tell a translator that left each class in the source's
                  colours from one that matched the target's, when the two domains' layouts differ
                  (more road, less sky): the class cast can. It needs labels on both sides: the
                  source's for translated frames, the target val set's for the reference.
edges_kept        of translated frames against the source frames they were made from: per pair, the
                  correlation of their luminance gradient magnitudes (3x3 Sobel), averaged over the
                  pairs. 1 = the same edges (the source against itself; a Gaussian blur of sigma 1
                  px keeps ~0.88 of the benchmark's frames, noise of std 20 ~0.94); smeared edges,
                  streaks and textures painted where the source has none lower it, a colour change
                  alone does not. The seed report's "blur and distortion", as a number.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

# CIE Delta E*ab of one just-noticeable colour difference (Mahy, Van Eycken & Oosterlinck 1994; Sharma,
# Digital Color Imaging Handbook, 2003): the line between a cast one measures and one that shows
CAST_JND = 2.3


def luminance(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255


def lattice(h: int, w: int) -> list[tuple[int, int]]:
    """The spectrum bins of a 2-D pattern of period 2 or 4 px (both frequencies nonzero)."""
    return [(round(k * h / 4) % h, round(l * w / 4) % w) for k in range(1, 4) for l in range(1, 4)]


def checkerboard_db(frames: Iterable[np.ndarray]) -> float | None:
    """The module docstring's checkerboard score of a set of frames (None for no frames). Frames of
    several sizes are grouped by size, each size's mean spectrum scored, the scores averaged by count."""
    spectra: dict[tuple[int, int], list] = {}
    for frame in frames:
        y = luminance(frame)
        y -= y.mean()
        power = np.abs(np.fft.fft2(y)) ** 2
        s = spectra.setdefault(y.shape, [np.zeros_like(power), 0])
        s[0] += power
        s[1] += 1
    if not spectra:
        return None
    scores, counts = [], []
    for (h, w), (total, n) in spectra.items():
        mean = total / n
        peaks = lattice(h, w)
        peak_set = set(peaks)
        ratios = []
        for ky, kx in peaks:
            around = [mean[(ky + dy) % h, (kx + dx) % w] for dy in range(-2, 3) for dx in range(-2, 3)
                      if ((ky + dy) % h, (kx + dx) % w) not in peak_set]
            ratios.append(10 * math.log10((mean[ky, kx] + 1e-12) / (float(np.median(around)) + 1e-12)))
        scores.append(float(np.mean(ratios)))
        counts.append(n)
    return float(np.average(scores, weights=counts))


def colour(frames: Iterable[np.ndarray]) -> dict | None:
    """Mean L*, a*, b* and chroma C* over every pixel of the frames (None for no frames)."""
    total, n = np.zeros(4), 0
    for frame in frames:
        lab = cv2.cvtColor(frame.astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        total += np.array([*lab.sum(0), chroma.sum()])
        n += len(lab)
    if not n:
        return None
    L, a, b, C = total / n
    return {"L": float(L), "a": float(a), "b": float(b), "chroma": float(C)}


def colour_shift(frames: dict, reference: dict) -> dict:
    """The cast of ``frames``' mean colour against ``reference``'s (both from ``colour``)."""
    da, db = frames["a"] - reference["a"], frames["b"] - reference["b"]
    return {"cast": float(math.hypot(da, db)), "cast_hue_deg": float(math.degrees(math.atan2(db, da)) % 360),
            "chroma": float(frames["chroma"] - reference["chroma"]), "lightness": float(frames["L"] - reference["L"])}


def class_colour(pairs: Iterable[tuple[np.ndarray, np.ndarray]], n_classes: int = 19) -> dict | None:
    """Per class, the mean L*, a*, b*, chroma and pixel count over (frame, trainIds) pairs; labels
    outside 0..n_classes-1 (ignore) are left out. None for no labelled pixel."""
    total, count = np.zeros((n_classes, 4)), np.zeros(n_classes)
    for frame, label in pairs:
        lab = cv2.cvtColor(frame.astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)
        ids = label.reshape(-1).astype(np.int64)
        keep = ids < n_classes
        ids, lab = ids[keep], lab[keep]
        values = np.column_stack([lab, np.hypot(lab[:, 1], lab[:, 2])])
        for k in range(4):
            total[:, k] += np.bincount(ids, weights=values[:, k], minlength=n_classes)
        count += np.bincount(ids, minlength=n_classes)
    if not count.sum():
        return None
    mean = total / np.maximum(count, 1)[:, None]
    return {"L": mean[:, 0].tolist(), "a": mean[:, 1].tolist(), "b": mean[:, 2].tolist(),
            "chroma": mean[:, 3].tolist(), "pixels": count.astype(int).tolist()}


def class_cast(frames: dict, reference: dict, names: Sequence[str] | None = None, top: int = 3) -> dict:
    """The module docstring's class cast of ``frames`` against ``reference`` (both from
    ``class_colour``), its lightness and chroma differences so weighted, and the ``top`` classes
    that make most of it (share x distance: what a viewer sees most of), named by ``names``.
    Classes the reference does not show are left out."""
    px, ref_px = np.array(frames["pixels"], float), np.array(reference["pixels"])
    w = px * (ref_px > 0)
    if not w.sum():
        return {"cast": None, "lightness": None, "chroma": None, "worst": []}
    w /= w.sum()
    f, r = ({k: np.array(d[k]) for k in ("L", "a", "b", "chroma")} for d in (frames, reference))
    dist = np.hypot(f["a"] - r["a"], f["b"] - r["b"])
    worst = [int(c) for c in np.argsort(-w * dist)[:top] if w[c] > 0]
    return {"cast": float(w @ dist), "lightness": float(w @ (f["L"] - r["L"])), "chroma": float(w @ (f["chroma"] - r["chroma"])),
            "worst": [{"class": names[c] if names else c, "cast": float(dist[c]), "share": float(w[c])} for c in worst]}


def edge_map(frame: np.ndarray) -> np.ndarray:
    y = luminance(frame)
    return np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3))


def edges_kept(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """The module docstring's edges_kept of (source, translated) frame pairs (None for no pairs); a
    source frame of another size is resized to its translation's (area averaging). A flat frame
    (no edges) has no correlation and is left out."""
    scores = []
    for source, translated in pairs:
        if source.shape[:2] != translated.shape[:2]:
            source = cv2.resize(source, translated.shape[1::-1], interpolation=cv2.INTER_AREA)
        a, b = edge_map(source).ravel(), edge_map(translated).ravel()
        if a.std() > 0 and b.std() > 0:
            scores.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(scores)) if scores else None


def hue_name(deg: float) -> str:
    """A word for a cast's hue angle in the a*b* plane."""
    names = [(20, "magenta-red"), (70, "orange"), (110, "yellow"), (160, "yellow-green"), (200, "green"),
             (250, "cyan-blue"), (300, "blue-violet"), (340, "magenta"), (360, "magenta-red")]
    return next(name for bound, name in names if deg < bound)
