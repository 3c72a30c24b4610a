"""Label maps against the official tables."""
import numpy as np

from i2iuda.data import labels as L

# cityscapesScripts/helpers/labels.py: (name, id, trainId, colour), typed out independently.
OFFICIAL = [
    ("unlabeled", 0, 255, (0, 0, 0)), ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)), ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)), ("dynamic", 5, 255, (111, 74, 0)), ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)), ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)), ("building", 11, 2, (70, 70, 70)), ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)), ("guard rail", 14, 255, (180, 165, 180)), ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)), ("pole", 17, 5, (153, 153, 153)), ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)), ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)), ("train", 31, 16, (0, 80, 100)), ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
]

# SYNTHIA RAND-CITYSCAPES README: id -> class name
SYNTHIA_NAMES = {0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
                 7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle",
                 13: "parking-slot", 14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider",
                 18: "truck", 19: "bus", 20: "train", 21: "wall", 22: "lanemarking"}


def test_cityscapes_lut_matches_official_table():
    for name, cid, tid, _ in OFFICIAL:
        assert L.CITYSCAPES_LUT[cid] == tid, name
    assert all(L.CITYSCAPES_LUT[i] == 255 for i in range(34, 256))


def test_class_names_and_palette_follow_trainid_order():
    train = sorted((tid, name, color) for name, _, tid, color in OFFICIAL if tid != 255)
    assert [n for _, n, _ in train] == list(L.CLASS_NAMES)
    assert [c for _, _, c in train] == [tuple(c) for c in L.PALETTE.tolist()]


def test_synthia_maps_16_shared_classes_by_name():
    rename = {"pedestrian": "person"}
    kept = {sid: L.CLASS_NAMES[tid] for sid, tid in L.SYNTHIA_ID_TO_TRAINID.items()}
    assert len(kept) == 16
    for sid, name in kept.items():
        assert rename.get(SYNTHIA_NAMES[sid], SYNTHIA_NAMES[sid]) == name
    # terrain, truck and train exist in SYNTHIA's list but are not among the 16 shared classes
    for sid in (0, 13, 14, 16, 18, 20, 22, 300, 65535):
        assert L.SYNTHIA_LUT[sid] == 255
    assert sorted(set(L.SYNTHIA_ID_TO_TRAINID.values())) == list(L.CLASSES_16)
    assert set(L.CLASSES_13) < set(L.CLASSES_16)
    assert not {3, 4, 5} & set(L.CLASSES_13)


def test_colorize_and_overlay():
    ids = np.array([[0, 10], [255, 13]], np.uint8)
    col = L.colorize(ids)
    assert tuple(col[0, 0]) == (128, 64, 128) and tuple(col[1, 0]) == (0, 0, 0)
    img = np.full((2, 2, 3), 200, np.uint8)
    ov = L.overlay(img, ids, alpha=1.0)
    assert tuple(ov[1, 0]) == (200, 200, 200)  # ignore keeps the image
    assert tuple(ov[0, 1]) == (70, 130, 180)
