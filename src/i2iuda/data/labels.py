"""The Cityscapes 19-class label space and the id -> trainId maps of the data sets we read.

Everything is a 256-entry (or 65536-entry for SYNTHIA) uint8 lookup table, so mapping a label
image is one fancy-indexing op: ``lut[label]``.
"""
from __future__ import annotations

import numpy as np

IGNORE = 255
NUM_CLASSES = 19

# trainId order, as in cityscapesScripts' labels.py.
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# Cityscapes labelId -> trainId (cityscapesScripts labels.py). Ids not listed are void (255):
# 0 unlabeled, 1 ego vehicle, 2 rectification border, 3 out of roi, 4 static, 5 dynamic,
# 6 ground, 9 parking, 10 rail track, 14 guard rail, 15 bridge, 16 tunnel, 18 polegroup,
# 29 caravan, 30 trailer, and -1 license plate.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
TRAINID_TO_CITYSCAPES_ID = {t: i for i, t in CITYSCAPES_ID_TO_TRAINID.items()}

# The official colour of every labelId (cityscapesScripts labels.py), for labels stored as RGB
# colour-coded PNGs (some redistributed GTA5 copies) instead of palette indices. Two colours are
# shared: black by the void ids 0-4, and (153,153,153) by pole and polegroup, read as pole (GTA5
# has no polegroup); (0,0,142) of the license plate (-1) is car's.
CITYSCAPES_ID_COLOURS = {
    0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 0, 0), 4: (0, 0, 0), 5: (111, 74, 0), 6: (81, 0, 81),
    7: (128, 64, 128), 8: (244, 35, 232), 9: (250, 170, 160), 10: (230, 150, 140), 11: (70, 70, 70),
    12: (102, 102, 156), 13: (190, 153, 153), 14: (180, 165, 180), 15: (150, 100, 100), 16: (150, 120, 90),
    17: (153, 153, 153), 19: (250, 170, 30), 20: (220, 220, 0), 21: (107, 142, 35), 22: (152, 251, 152),
    23: (70, 130, 180), 24: (220, 20, 60), 25: (255, 0, 0), 26: (0, 0, 142), 27: (0, 0, 70), 28: (0, 60, 100),
    29: (0, 0, 90), 30: (0, 0, 110), 31: (0, 80, 100), 32: (0, 0, 230), 33: (119, 11, 32),
}
UNKNOWN_COLOUR = 254  # in colour_lut(): a colour not in the table (read as ignore, counted by data check)


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_COLOUR_LUT: np.ndarray | None = None


def colour_lut() -> np.ndarray:
    """24-bit colour code -> trainId (16 MB, built once): IGNORE for the void ids' colours,
    UNKNOWN_COLOUR for colours not in the official table."""
    global _COLOUR_LUT
    if _COLOUR_LUT is None:
        lut = np.full(1 << 24, UNKNOWN_COLOUR, dtype=np.uint8)
        for label_id, colour in CITYSCAPES_ID_COLOURS.items():
            lut[_rgb_code(np.array(colour))] = CITYSCAPES_ID_TO_TRAINID.get(label_id, IGNORE)
        _COLOUR_LUT = lut
    return _COLOUR_LUT


def colours_to_train_ids(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """HxWx3 colour-coded label -> (HxW trainIds, number of pixels whose colour is not in the
    official table; those become IGNORE)."""
    ids = colour_lut()[_rgb_code(rgb)]
    unknown = ids == UNKNOWN_COLOUR
    n = int(unknown.sum())
    if n:
        ids[unknown] = IGNORE
    return ids, n

# SYNTHIA RAND-CITYSCAPES class ids (red channel of GT/LABELS/*.png) -> trainId. Only the
# 16 classes SYNTHIA shares with Cityscapes are kept; terrain (16), truck (18) and train (20)
# exist in SYNTHIA's list but are excluded by the standard protocol, like void, parking-slot,
# road-work and lane-marking.
SYNTHIA_ID_TO_TRAINID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12,
    8: 13, 19: 15, 12: 17, 11: 18,
}

# Evaluation subsets (trainIds) for SYNTHIA -> Cityscapes: 16 shared classes, and the 13
# classes of the older protocol that also drops wall, fence and pole.
CLASSES_19 = tuple(range(NUM_CLASSES))
CLASSES_16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CLASSES_13 = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
EVAL_SUBSETS = {"19": CLASSES_19, "16": CLASSES_16, "13": CLASSES_13}


def make_lut(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 lookup table of ``size`` entries: ``mapping`` where given, IGNORE elsewhere."""
    lut = np.full(size, IGNORE, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


CITYSCAPES_LUT = make_lut(CITYSCAPES_ID_TO_TRAINID)
SYNTHIA_LUT = make_lut(SYNTHIA_ID_TO_TRAINID, size=65536)  # 16-bit PNG values
TRAINID_TO_ID_LUT = make_lut(TRAINID_TO_CITYSCAPES_ID)  # for writing labelId files
TRAINID_TO_ID_LUT[IGNORE] = 0  # void -> "unlabeled"


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW trainIds -> HxWx3 uint8 Cityscapes colours; ignore pixels are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[train_ids]


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour-coded labels over an HxWx3 uint8 image (ignore pixels left as they are)."""
    color = colorize(train_ids).astype(np.float32)
    out = image.astype(np.float32)
    valid = (train_ids != IGNORE)[..., None]
    out = np.where(valid, (1 - alpha) * out + alpha * color, out)
    return out.round().clip(0, 255).astype(np.uint8)
