"""The built-in synthetic benchmark: procedural street scenes in two domains.

*Target* is a "photo": muted per-class colours (overcast sky, warm buildings, dark foliage),
texture on every surface, per-frame exposure, colour cast and vignetting, shadows across the
road, lens blur and sensor noise, and its own layout (higher horizon, narrower roads, more cars,
an ego-vehicle hood). It is written in Cityscapes' layout (``target/leftImg8bit``,
``target/gtFine`` with ``*_gtFine_labelIds.png``, train and val).

*Source* is a "game render" of the same world: each class in a colour of the same family as
the target's, pushed the way game engines differ from photos (more saturated and brighter),
flat shading, hard edges, clean lighting, no texture, no sensor noise, no lens blur, less
per-instance colour variation, and its own layout (lower horizon, wider roads, fewer cars, no
hood). It is written in GTA5's layout (``source/images``, ``source/labels`` as palette PNGs of
labelIds).

How far the source's colours are from the target's is one setting, ``source_gap`` (see
``source_palette``): 0 draws the source in the target's own palette (the render differences
alone), 1 is a full game look of the target's palette (HSV saturation x 1.6, value x 1.15), and
2 is the *hard* variant, the first benchmark's remapped palette in which most classes have
another hue than in the target (blue cars and signs, yellow trucks, red people). Every source
frame has the same scene and labels at every gap: only its colours change. The default was set
by the source-only / oracle mIoU ratio alone (docs/benchmark.md).

Both domains share the label space and the family of geometries; the target's appearance is
random per frame and per pixel (noise, textures, casts), so no formula inverts it.

Scenes are drawn in a one-point perspective: the ground row ``y`` below the horizon ``h``
has scale ``s = (y - h) / (H - h)`` (0 at the horizon, 1 at the bottom), and a point at
lateral distance ``u`` from the road centre (in bottom-row pixels) is at ``x = vx + u * s``.
"""
from __future__ import annotations

import colorsys
import multiprocessing as mp
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from ..config import at_least, between
from ..io import atomic_write_bytes, encode_png, save_palette_png, save_png, write_json
from . import labels as L
from ..progress import Bar, say
from ..pictures import grid
from .datasets import build_index, load_pair

# trainIds used by the generator
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, \
    CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = range(19)
VOID = L.IGNORE

# Per-class base colours (RGB, 0..1). The target's: a muted "photographic" palette.
TARGET_COLORS = {
    ROAD: (0.33, 0.34, 0.33), SIDEWALK: (0.50, 0.48, 0.46), BUILDING: (0.52, 0.44, 0.36),
    WALL: (0.58, 0.56, 0.50), FENCE: (0.36, 0.40, 0.30), POLE: (0.45, 0.46, 0.48),
    LIGHT: (0.20, 0.22, 0.20), SIGN: (0.75, 0.72, 0.60), VEG: (0.22, 0.32, 0.14),
    TERRAIN: (0.48, 0.50, 0.30), SKY: (0.80, 0.83, 0.86), PERSON: (0.30, 0.25, 0.28),
    RIDER: (0.35, 0.30, 0.25), BIKE: (0.15, 0.22, 0.38), MOTO: (0.40, 0.22, 0.22),
    TRUCK: (0.70, 0.70, 0.68), BUS: (0.60, 0.62, 0.55), CAR: (0.45, 0.45, 0.48),
}
# The hard variant's source palette (source_gap 2; the first benchmark's): saturated colours of
# other hues than the target's for most classes, a gap of a kind no real pair of domains has.
HARD_COLORS = {
    ROAD: (0.42, 0.40, 0.47), SIDEWALK: (0.78, 0.70, 0.62), BUILDING: (0.55, 0.55, 0.60),
    WALL: (0.75, 0.62, 0.45), FENCE: (0.60, 0.45, 0.30), POLE: (0.30, 0.30, 0.32),
    LIGHT: (0.15, 0.15, 0.15), SIGN: (0.10, 0.35, 0.85), VEG: (0.15, 0.70, 0.15),
    TERRAIN: (0.55, 0.80, 0.25), SKY: (0.30, 0.60, 1.00), PERSON: (0.85, 0.20, 0.20),
    RIDER: (0.95, 0.55, 0.10), BIKE: (0.10, 0.10, 0.10), MOTO: (0.55, 0.10, 0.45),
    TRUCK: (0.90, 0.85, 0.20), BUS: (0.95, 0.45, 0.10), CAR: (0.20, 0.30, 0.85),
}
# A game engine's look at source_gap 1: HSV saturation and value scaled by these, clipped to 1.
GAME_SATURATION, GAME_VALUE = 1.6, 1.15
DEFAULT_SOURCE_GAP = 0.9  # set by the source-only / oracle ratio alone (docs/benchmark.md)


@lru_cache(maxsize=16)
def _palette(gap: float) -> tuple:
    def game(rgb, strength):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        s = min(s * (1 + (GAME_SATURATION - 1) * strength), 1.0)
        v = min(v * (1 + (GAME_VALUE - 1) * strength), 1.0)
        return colorsys.hsv_to_rgb(h, s, v)

    if gap >= 2:
        return tuple(HARD_COLORS.items())
    if gap <= 0:
        return tuple(TARGET_COLORS.items())
    if gap <= 1:
        return tuple((c, game(rgb, gap)) for c, rgb in TARGET_COLORS.items())
    t = gap - 1  # from the full game look toward the hard variant's hues, linearly in RGB
    return tuple((c, tuple((1 - t) * a + t * b for a, b in zip(game(rgb, 1.0), HARD_COLORS[c])))
                 for c, rgb in TARGET_COLORS.items())


def source_palette(gap: float) -> dict[int, tuple[float, float, float]]:
    """The source's base colour per class at ``source_gap`` = ``gap`` (0..2):

        0       the target's own colours
        0..1    a game look of them: HSV saturation x (1 + 0.6 gap), value x (1 + 0.15 gap),
                clipped (the same hue: sky stays blue-grey, vegetation green, roads grey)
        1..2    from the full game look (gap 1) to the hard variant's colours, linearly in RGB
        2       the hard variant: the first benchmark's remapped hues (HARD_COLORS), exactly
    """
    if not 0 <= gap <= 2:
        raise ValueError(f"source_gap {gap}: expected 0..2")
    return dict(_palette(float(gap)))


# How much per-instance colour variation each domain has (cars vary a lot in both).
TEXTURE = {ROAD: 0.18, SIDEWALK: 0.22, BUILDING: 0.20, WALL: 0.25, FENCE: 0.3, VEG: 0.45, TERRAIN: 0.35,
           SKY: 0.06, PERSON: 0.2, RIDER: 0.2, CAR: 0.12, TRUCK: 0.12, BUS: 0.12, POLE: 0.1}


@dataclass
class SynthConfig:
    height: int = 64
    width: int = 128
    n_source: int = 2000  # GTA5 layout; its train/val holdout is by file-name hash (10% val)
    n_target_train: int = 2000
    n_target_val: int = 500
    seed: int = 0
    workers: int = 2
    # how far the source's colours are from the target's: 0 (the target's palette) .. 1 (a game
    # look of it) .. 2 (the hard variant's remapped hues); see source_palette
    source_gap: float = DEFAULT_SOURCE_GAP

    RANGES: ClassVar[dict] = {"height": at_least(16), "width": at_least(16), "n_source": at_least(1),
                              "n_target_train": at_least(1), "n_target_val": at_least(1), "seed": at_least(0),
                              "workers": at_least(0), "source_gap": between(0, 2)}


@dataclass(frozen=True)
class LayoutStyle:
    """Distribution of scene layouts of one domain (the target's is mildly different)."""
    horizon: tuple[float, float]  # fraction of H
    road_half: tuple[float, float]  # half road width at the bottom row, fraction of W
    cars: float  # mean number of cars
    people: float
    large_vehicle: float  # probability of a bus or truck
    riders: float  # mean number of riders (on a bicycle or a motorcycle)
    trees: float
    hood: float  # probability of an ego-vehicle hood (void) at the bottom


SOURCE_LAYOUT = LayoutStyle(horizon=(0.36, 0.48), road_half=(0.32, 0.55), cars=2.5, people=2.0,
                            large_vehicle=0.45, riders=1.2, trees=3.0, hood=0.0)
TARGET_LAYOUT = LayoutStyle(horizon=(0.40, 0.52), road_half=(0.26, 0.48), cars=3.5, people=2.5,
                            large_vehicle=0.35, riders=1.0, trees=2.0, hood=0.8)


class Canvas:
    """A label map and an albedo image painted together, far objects first."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, colors: dict, jitter: float):
        self.h, self.w, self.rng = h, w, rng
        self.label = np.full((h, w), SKY, np.uint8)
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.colors, self.jitter = colors, jitter
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def color(self, cls: int, vary: float = 1.0) -> np.ndarray:
        base = np.array(self.colors[cls], np.float32)
        return np.clip(base * (1 + self.jitter * vary * self.rng.normal(0, 1, 3)), 0, 1)

    def paint(self, mask: np.ndarray, cls: int, color: np.ndarray | None = None,
              box: tuple[int, int, int, int] | None = None) -> None:
        """Paint ``mask`` (full frame, or the sub-window ``box`` = y0, y1, x0, x1)."""
        color = self.color(cls) if color is None else color
        if box is None:
            self.label[mask] = cls
            self.albedo[mask] = color
        else:
            y0, y1, x0, x1 = box
            self.label[y0:y1, x0:x1][mask] = cls
            self.albedo[y0:y1, x0:x1][mask] = color

    def window(self, cy: float, cx: float, ry: float, rx: float):
        """Clipped box around a centre and its local coordinate grids (or None if off-frame)."""
        y0, y1 = max(int(cy - ry) - 1, 0), min(int(cy + ry) + 2, self.h)
        x0, x1 = max(int(cx - rx) - 1, 0), min(int(cx + rx) + 2, self.w)
        if y0 >= y1 or x0 >= x1:
            return None
        return (y0, y1, x0, x1), self.yy[y0:y1, x0:x1], self.xx[y0:y1, x0:x1]

    def rect(self, cls, top, bottom, left, right, color=None):
        box = self.window((top + bottom) / 2, (left + right) / 2, (bottom - top) / 2, (right - left) / 2)
        if box is not None:
            b, yy, xx = box
            self.paint((yy >= top) & (yy < bottom) & (xx >= left) & (xx < right), cls, color, b)

    def ellipse(self, cls, cy, cx, ry, rx, color=None):
        box = self.window(cy, cx, ry, rx)
        if box is not None:
            b, yy, xx = box
            self.paint(((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1, cls, color, b)


def _scene(cv: Canvas, layout: LayoutStyle, shading: bool) -> None:
    """Draw one street scene (labels + flat albedo) on the canvas."""
    rng, H, W = cv.rng, cv.h, cv.w
    # The thinnest parts (poles, lamp housings, wheels, riders) are at least 2t px thick: 1/32 of
    # the frame height, 2 px at the CPU preset's 64x128. Thinner than that, a network at output
    # stride 16 cannot learn them from a few hundred steps, and they would score 0 for every model.
    t = H / 64
    h = rng.uniform(*layout.horizon) * H
    vx = rng.uniform(0.3, 0.7) * W
    road = rng.uniform(*layout.road_half) * W
    side = rng.uniform(0.10, 0.22) * W
    yy, xx = cv.yy, cv.xx
    s = np.clip((yy - h) / (H - h), 1e-3, None)
    below = yy > h
    u = (xx - vx) / s  # lateral ground coordinate of every pixel below the horizon

    # Sky: a vertical gradient (darker at the zenith), then the ground.
    sky = cv.color(SKY)
    cv.label[:] = SKY
    cv.albedo[:] = sky * (0.8 + 0.2 * (yy / max(h, 1)))[..., None].clip(0, 1.2)
    sides = []
    for sign in (-1, 1):
        kind = rng.choice(["buildings", "green", "mixed"], p=[0.5, 0.2, 0.3])
        sides.append((sign, kind))
        beyond = below & (sign * u > road + side)
        cv.paint(beyond, TERRAIN if kind == "green" else SIDEWALK)
    cv.paint(below & (np.abs(u) >= road) & (np.abs(u) < road + side), SIDEWALK)
    cv.paint(below & (np.abs(u) < road), ROAD)
    # lane markings belong to the road class but break its texture
    if rng.random() < 0.7:
        dash = (np.abs(u) < 0.015 * W) & below & (np.sin(40 / s) > 0)
        cv.albedo[dash] = np.clip(cv.albedo[dash] + 0.35, 0, 1)

    # Roadside structures: facades (buildings / hedges) at lateral distance far, split in depth.
    for sign, kind in sides:
        far = road + side + (rng.uniform(0, 0.25) * W if kind != "buildings" else rng.uniform(0, 0.06) * W)
        cuts = np.sort(rng.uniform(0.05, 1.6, rng.integers(2, 6)))
        edges = np.concatenate([[0.02], cuts, [3.0]])
        colx = np.arange(W, dtype=np.float32)
        sc = (sign * (colx - vx)) / far  # depth scale of the facade plane at each column
        for a, b in zip(edges[:-1], edges[1:]):
            cls = BUILDING if kind == "buildings" or (kind == "mixed" and rng.random() < 0.5) else VEG
            if rng.random() < 0.15:
                continue  # a gap between blocks
            height = rng.uniform(0.6, 2.2) * (H - h) if cls == BUILDING else rng.uniform(0.25, 0.6) * (H - h)
            base = h + sc * (H - h)
            top = h - height * sc
            if cls == VEG:
                top = top + rng.uniform(2, 6) * np.sin(colx / rng.uniform(2, 5)) * np.clip(sc, 0, 1)
            m = (sc >= a) & (sc < b) & (sc > 0)
            face = m[None, :] & (yy >= top[None, :]) & (yy < base[None, :])
            color = cv.color(cls)
            if shading:  # flat shading: facades on one side are lit, on the other in shade
                color = np.clip(color * (1.15 if sign < 0 else 0.8), 0, 1)
            cv.paint(face, cls, color)
            if cls == BUILDING:  # windows: a dark grid on the facade, part of the building
                win = face & (np.sin(yy * 1.3 / np.maximum(sc[None, :], 0.2)) > 0.5) \
                    & (np.sin(colx[None, :] * 0.9) > 0.3)
                cv.albedo[win] *= 0.55
        # a wall or fence along the sidewalk's outer edge
        if rng.random() < 0.8:
            cls = WALL if rng.random() < 0.5 else FENCE
            edge = road + side
            sc2 = (sign * (colx - vx)) / edge
            a = rng.uniform(0.1, 0.5)
            b = a + rng.uniform(0.3, 0.8)
            height = rng.uniform(0.2, 0.45) * (H - h)
            m = (sc2 >= a) & (sc2 < b)
            face = m[None, :] & (yy >= (h + sc2 * (H - h) - height * sc2)[None, :]) & (yy < (h + sc2 * (H - h))[None, :])
            if cls == FENCE:  # a see-through fence: labelled whole (as Cityscapes labels fences),
                # posts and a rail in the fence's colour, what is behind showing through between them
                behind = cv.albedo[face].copy()
                cv.paint(face, cls)
                rail = np.abs(yy - (h + sc2 * (H - h) - height * sc2 * 0.8)[None, :]) < t
                mesh = face & ~((np.sin(colx / (1.5 * t))[None, :] > 0.3) | rail)
                cv.albedo[mesh] = 0.5 * cv.albedo[mesh] + 0.5 * behind[mesh[face]]
            else:
                cv.paint(face, cls)

    # Objects, sorted far to near so that near ones occlude far ones.
    objects = []
    for _ in range(rng.poisson(layout.trees)):
        sign = rng.choice([-1, 1])
        objects.append(("tree", rng.uniform(0.15, 1.0), sign * (road + side + rng.uniform(0.02, 0.15) * W)))
    for _ in range(rng.integers(2, 6)):
        sign = rng.choice([-1, 1])
        objects.append(("pole", rng.uniform(0.2, 1.0), sign * (road + side * rng.uniform(0.6, 0.95))))
    for _ in range(rng.poisson(layout.cars)):
        objects.append(("car", rng.uniform(0.08, 1.0), rng.uniform(-0.8, 0.8) * road))
    if rng.random() < layout.large_vehicle:
        objects.append(("bus" if rng.random() < 0.5 else "truck", rng.uniform(0.15, 0.7), rng.uniform(-0.5, 0.5) * road))
    for _ in range(rng.poisson(layout.people)):
        sign = rng.choice([-1, 1])
        objects.append(("person", rng.uniform(0.1, 1.0), sign * (road + side * rng.uniform(0.15, 0.85))))
    for _ in range(rng.poisson(layout.riders)):
        objects.append(("rider", rng.uniform(0.35, 1.0), rng.choice([-1, 1]) * road * rng.uniform(0.6, 0.95)))
    objects.sort(key=lambda o: o[1])
    for kind, sc, lat in objects:
        y = h + sc * (H - h)
        x = vx + lat * sc
        k = sc * (H - h)  # pixels per world unit at that depth (a unit ~ the camera height)
        if kind == "tree":
            cv.rect(VEG, y - 0.9 * k, y, x - 0.04 * k, x + 0.04 * k, color=cv.color(VEG) * 0.5)
            cv.ellipse(VEG, y - 1.3 * k, x, 0.5 * k, 0.4 * k)
        elif kind == "pole":
            top = y - rng.uniform(1.2, 2.0) * k
            cv.rect(POLE, top, y, x - max(0.03 * k, t), x + max(0.03 * k, t))
            r = rng.random()
            if r < 0.45:
                rs = max(0.15 * k, 2 * t)
                cv.ellipse(SIGN, top + rs, x, rs, rs) if rng.random() < 0.5 else \
                    cv.rect(SIGN, top, top + 1.8 * rs, x - rs, x + rs)
            elif r < 0.9:
                hw, hh = max(0.07 * k, 1.25 * t), max(0.35 * k, 5 * t)
                cv.rect(LIGHT, top, top + hh, x - hw, x + hw)
                lamp = np.array([(0.9, 0.1, 0.1), (0.9, 0.7, 0.1), (0.1, 0.9, 0.3)][rng.integers(3)], np.float32)
                cv.ellipse(LIGHT, top + hh * 0.3, x, hw * 0.6, hw * 0.6, color=lamp)
        elif kind == "car":
            w, hh = rng.uniform(0.55, 0.75) * k, rng.uniform(0.35, 0.45) * k
            body = cv.color(CAR, vary=3.0)
            cv.rect(CAR, y - hh * 0.65, y - 0.06 * k, x - w, x + w, color=body)
            cv.rect(CAR, y - hh, y - hh * 0.6, x - w * 0.7, x + w * 0.7, color=body * 0.6)  # windows
            for dx in (-0.65, 0.65):
                cv.ellipse(CAR, y - 0.08 * k, x + dx * w, 0.09 * k, 0.12 * k, color=np.full(3, 0.08, np.float32))
        elif kind in ("bus", "truck"):
            cls = BUS if kind == "bus" else TRUCK
            w, hh = rng.uniform(0.8, 1.0) * k, rng.uniform(0.9, 1.3) * k
            color = cv.color(cls, vary=2.0)
            cv.rect(cls, y - hh, y - 0.06 * k, x - w, x + w, color=color)
            if cls == BUS:
                cv.rect(cls, y - hh * 0.85, y - hh * 0.55, x - w * 0.9, x + w * 0.9, color=color * 0.5)
            else:
                cv.rect(cls, y - hh * 0.7, y - 0.06 * k, x + w * 0.55, x + w * 1.05, color=color * 0.8)
        elif kind == "person":
            ph = rng.uniform(0.75, 0.95) * k
            clothes = cv.color(PERSON, vary=2.0)
            cv.rect(PERSON, y - ph * 0.5, y, x - max(0.06 * k, t), x + max(0.06 * k, t), color=clothes * 0.6)  # legs
            cv.ellipse(PERSON, y - ph * 0.62, x, ph * 0.2, max(0.11 * k, 1.5 * t), color=clothes)  # torso
            cv.ellipse(PERSON, y - ph * 0.9, x, ph * 0.08, 0.06 * k, color=np.array((0.85, 0.65, 0.5), np.float32))
        elif kind == "rider":
            behind, behind_albedo = cv.label.copy(), cv.albedo.copy()
            # a bicycle: two thin wheels (rings) and a thin frame; a motorcycle: solid wheels and a
            # body block between them (its own colour), so that the two differ in shape, not only hue
            moto = rng.random() < 0.4
            cls = MOTO if moto else BIKE
            r = max(0.15 * k, 2.5 * t)
            color = cv.color(cls)
            for dx in (-0.28, 0.28):
                cv.ellipse(cls, y - r, x + dx * k, r, r, color=color)
                if not moto:  # the wheel's inside shows what is behind it: a ring
                    box = cv.window(y - r, x + dx * k, r, r)
                    if box is not None and r > 3 * t:
                        (y0, y1, x0, x1), yy_, xx_ = box
                        hole = ((yy_ - (y - r)) ** 2 + (xx_ - (x + dx * k)) ** 2 < (r - 2 * t) ** 2) \
                            & (cv.label[y0:y1, x0:x1] == cls)
                        cv.label[y0:y1, x0:x1][hole] = behind[y0:y1, x0:x1][hole]
                        cv.albedo[y0:y1, x0:x1][hole] = behind_albedo[y0:y1, x0:x1][hole]
            if moto:
                cv.rect(cls, y - 2.2 * r, y - 0.6 * r, x - 0.3 * k, x + 0.3 * k, color=color * 0.8)
            else:
                cv.rect(cls, y - 1.3 * r - t, y - 1.3 * r + t, x - 0.28 * k, x + 0.28 * k, color=color)
            cv.ellipse(RIDER, y - 0.6 * k, x, 0.25 * k, max(0.1 * k, 1.5 * t))
            cv.ellipse(RIDER, y - 0.9 * k, x, 0.07 * k, 0.06 * k, color=np.array((0.85, 0.65, 0.5), np.float32))
    if rng.random() < layout.hood:  # the ego vehicle's hood: void, as in Cityscapes
        top = H - rng.uniform(0.06, 0.12) * H
        hood = yy > top + 6 * ((xx - W / 2) / (W / 2)) ** 2
        cv.paint(hood, VOID, color=np.array((0.1, 0.1, 0.12), np.float32))


class NoiseBank:
    """A few precomputed fractal-noise fields; frames take random crops of them (fast)."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, n: int = 4):
        self.h, self.w = h, w
        self.fields = []
        for _ in range(n):
            f = np.zeros((2 * h, 2 * w), np.float32)
            for octave in (4, 8, 16, 32, 64):
                grid = rng.normal(0, 1, (max(2 * h // (128 // octave), 2), max(2 * w // (128 // octave), 2))).astype(np.float32)
                f += cv2.resize(grid, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC) / np.sqrt(octave)
            self.fields.append(f / f.std())

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        f = self.fields[rng.integers(len(self.fields))]
        y, x = rng.integers(0, self.h), rng.integers(0, self.w)
        return f[y:y + self.h, x:x + self.w]


def render_frame(domain: str, index: int, split: str, cfg: SynthConfig, bank: NoiseBank):
    """-> (HxWx3 uint8 image, HxW uint8 trainIds). Deterministic in (seed, domain, split, index)."""
    dom_id = {"source": 0, "target": 1}[domain]
    split_id = {"all": 0, "train": 1, "val": 2}[split]
    rng = np.random.default_rng([cfg.seed, dom_id, split_id, index])
    H, W = cfg.height, cfg.width
    if domain == "source":
        cv = Canvas(H, W, rng, source_palette(cfg.source_gap), jitter=0.06)
        _scene(cv, SOURCE_LAYOUT, shading=True)
        img = cv.albedo
    else:
        cv = Canvas(H, W, rng, TARGET_COLORS, jitter=0.12)
        _scene(cv, TARGET_LAYOUT, shading=False)
        img = cv.albedo
        # texture: per-class strength, two noise fields (coarse blotches, fine grain)
        strength = np.zeros(256, np.float32)
        for cls, t in TEXTURE.items():
            strength[cls] = t
        tex = strength[cv.label][..., None]
        img = img * (1 + tex * (0.6 * bank.crop(rng)[..., None] + 0.4 * rng.normal(0, 1, (H, W, 1)).astype(np.float32)))
        # illumination: exposure, a soft gradient, shadows across the road, vignetting
        exposure = rng.uniform(0.65, 1.15)
        grad = 1 + rng.uniform(-0.25, 0.25) * (cv.xx / W - 0.5) + rng.uniform(-0.15, 0.15) * (cv.yy / H - 0.5)
        shadow = np.ones((H, W), np.float32)
        for _ in range(rng.integers(0, 3)):
            x0, slope, width = rng.uniform(0, W), rng.uniform(-2, 2), rng.uniform(0.05, 0.3) * W
            band = np.abs(cv.xx - (x0 + slope * (cv.yy - H))) < width
            shadow[band & (cv.label <= SIDEWALK)] = rng.uniform(0.55, 0.75)
        vignette = 1 - 0.35 * (((cv.xx - W / 2) / W) ** 2 + ((cv.yy - H / 2) / H) ** 2)
        img = img * (exposure * grad * shadow * vignette)[..., None]
        cast = np.array([1.04, 1.0, 0.92], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        img = img * cast
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.5, 1.1) * max(H / 128, 0.5))
        img = img + rng.normal(0, rng.uniform(0.01, 0.03), img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv.label


# --- writing ------------------------------------------------------------------------------------

TARGET_CITIES = {"train": ("alpha", "bravo", "charlie"), "val": ("delta",)}


def frame_paths(root: Path, domain: str, split: str, index: int) -> tuple[Path, Path]:
    if domain == "source":
        return root / "source" / "images" / f"{index:05d}.png", root / "source" / "labels" / f"{index:05d}.png"
    cities = TARGET_CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    return (root / "target" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "target" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


_BANK: dict = {}


def _write_job(job) -> int:
    root, domain, split, start, stop, cfg = job
    for i in range(start, stop):
        _write_frame(domain, split, i, cfg, *frame_paths(root, domain, split, i))
    return stop - start


def _write_frame(domain: str, split: str, i: int, cfg: SynthConfig, img_path: Path, lbl_path: Path,
                 trim_label_rows: int = 0) -> None:
    """Render one frame and write it with its label (target: labelIds; source: GTA5's palette
    PNG, ``trim_label_rows`` short as some real GTA5 labels are). Finished frames are kept."""
    if img_path.exists() and lbl_path.exists():
        return
    key = (cfg.seed, cfg.height, cfg.width)
    if key not in _BANK:  # one noise bank per worker process and size
        _BANK[key] = NoiseBank(cfg.height, cfg.width, np.random.default_rng([cfg.seed, 99]))
    img, train_ids = render_frame(domain, i, split, cfg, _BANK[key])
    ids = L.TRAINID_TO_ID_LUT[train_ids]
    if domain == "target":
        ids[train_ids == VOID] = 1  # ego vehicle
        atomic_write_bytes(lbl_path, encode_png(ids))
    else:
        save_palette_png(lbl_path, ids[: ids.shape[0] - trim_label_rows], _cityscapes_id_palette())
    atomic_write_bytes(img_path, encode_png(img))


def _cityscapes_id_palette() -> np.ndarray:
    """GTA5's label palette: labelId index -> the Cityscapes colour of its class."""
    pal = np.zeros((256, 3), np.uint8)
    for cid, tid in L.CITYSCAPES_ID_TO_TRAINID.items():
        pal[cid] = L.PALETTE[tid]
    return pal


def _run_jobs(fn, jobs: list, total: int, workers: int, name: str, progress: bool) -> None:
    """Run ``fn(job)`` (-> frames written) over ``jobs`` in ``workers`` processes, with a progress bar."""

    ctx = mp.get_context("fork") if hasattr(__import__("os"), "fork") else mp.get_context()
    with Bar(total, name, unit="frames", show=progress) as bar:
        if workers > 1:
            with ctx.Pool(workers) as pool:
                for n in pool.imap_unordered(fn, jobs):
                    bar.advance(n)
        else:
            for job in jobs:
                bar.advance(fn(job))


def written_with(out: str | Path) -> dict | None:
    """The settings a benchmark folder was drawn with (OUT/synth.json), or None if it has none.
    ``complete`` is False while it is being written; folders written before ``source_gap``
    existed are the hard variant (gap 2)."""
    import json

    manifest = Path(out) / "synth.json"
    if not manifest.is_file():
        return None
    return {"source_gap": 2.0, "complete": True, **json.loads(manifest.read_text())}


def drawn_by(settings: dict) -> dict:
    """What decides the frames: every setting but the number of workers (and the write state)."""
    return {k: v for k, v in settings.items() if k not in ("workers", "complete")}


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write the benchmark to ``out``: resumable (finished frames are kept), a finished benchmark
    is left as it is, and one drawn with other settings is drawn again (its frames would
    otherwise be kept)."""

    out = Path(out)
    before = written_with(out)
    if before is not None and drawn_by(before) == drawn_by(asdict(cfg)) and before["complete"]:
        return out
    if before is not None and drawn_by(before) != drawn_by(asdict(cfg)):
        changed = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in drawn_by(asdict(cfg)).items() if before.get(k) != v)
        say(f"{out}: drawn with other settings ({changed}): drawing it again", "yellow")
        for sub in ("source", "target", "preview.png"):
            (out / sub).unlink() if (out / sub).is_file() else shutil.rmtree(out / sub, ignore_errors=True)
    write_json(out / "synth.json", {**asdict(cfg), "complete": False})
    chunk = 50
    jobs = []
    for domain, split, n in (("source", "all", cfg.n_source), ("target", "train", cfg.n_target_train),
                             ("target", "val", cfg.n_target_val)):
        jobs += [(out, domain, split, a, min(a + chunk, n), cfg) for a in range(0, n, chunk)]
    _run_jobs(_write_job, jobs, cfg.n_source + cfg.n_target_train + cfg.n_target_val, cfg.workers, "synth", progress)
    write_json(out / "synth.json", {**asdict(cfg), "complete": True})
    return out


# --- the full-resolution rehearsal -------------------------------------------------------------

GTA5_SIZE, CITYSCAPES_SIZE = (1052, 1914), (1024, 2048)  # (H, W) of the real data sets


def generate_real_sizes(out: str | Path, n_source: int = 16, n_target_train: int = 8, n_target_val: int = 4,
                        seed: int = 0, workers: int = 2, progress: bool = True) -> Path:
    """``i2iuda synth --preset real-sizes``: a few frames of the benchmark at the real data sets'
    sizes and layouts, to rehearse the published presets' code paths: OUT/gta5 (1914x1052 frames,
    palette label PNGs; every fourth label 2 px short, as some real GTA5 labels are) and
    OUT/cityscapes (2048x1024, labelIds, leftImg8bit/gtFine with city folders, train and val).
    Read them with ``gta5:OUT/gta5`` and ``cityscapes:OUT/cityscapes``."""
    import json

    out = Path(out)
    about = {"preset": "real-sizes", "n_source": n_source, "n_target_train": n_target_train,
             "n_target_val": n_target_val, "seed": seed, "source_gap": DEFAULT_SOURCE_GAP}
    if (out / "synth.json").is_file():
        if json.loads((out / "synth.json").read_text()) == about:
            return out
        for sub in ("gta5", "cityscapes"):  # drawn with other settings: finished frames would be kept
            shutil.rmtree(out / sub, ignore_errors=True)
    jobs = [(out, seed, "source", "all", i) for i in range(n_source)] \
        + [(out, seed, "target", "train", i) for i in range(n_target_train)] \
        + [(out, seed, "target", "val", i) for i in range(n_target_val)]
    _run_jobs(_write_real_size, jobs, len(jobs), workers, "synth (real sizes)", progress)
    write_json(out / "synth.json", about)
    return out


def _write_real_size(job) -> int:
    out, seed, domain, split, i = job
    h, w = GTA5_SIZE if domain == "source" else CITYSCAPES_SIZE
    img_path, lbl_path = frame_paths(out, domain, split, i)
    if domain == "source":  # GTA5's own layout: OUT/gta5/images, OUT/gta5/labels
        img_path, lbl_path = out / "gta5" / "images" / img_path.name, out / "gta5" / "labels" / lbl_path.name
    else:
        img_path = out / "cityscapes" / img_path.relative_to(out / "target")
        lbl_path = out / "cityscapes" / lbl_path.relative_to(out / "target")
    _write_frame(domain, split, i, SynthConfig(height=h, width=w, seed=seed), img_path, lbl_path,
                 trim_label_rows=2 if domain == "source" and i % 4 == 3 else 0)
    return 1


def write_preview(root: str | Path, n: int = 4) -> Path:
    """A picture of the first ``n`` source and target frames, read back through the GTA5 and
    Cityscapes readers, each beside its label overlay: ``ROOT/preview.png``."""

    rows = []
    src = build_index(f"synthetic:{root}:source")
    tgt = build_index(f"synthetic:{root}:target-train")
    for s, t in zip(src.samples[:n], tgt.samples[:n]):
        si, sl = load_pair(s, src.label_format)
        ti, tl = load_pair(t, tgt.label_format)
        rows.append([si, L.overlay(si, sl, 0.6), ti, L.overlay(ti, tl, 0.6)])
    out = Path(root) / "preview.png"
    save_png(out, grid(rows, captions=["source", "source labels", "target", "target labels"]))
    return out
