"""Readers on the shared real-format samples, and the bad-input cases."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from i2iuda.data import labels as L
from i2iuda.data.check import check_dataset, format_report
from i2iuda.data.datasets import SegmentationDataset, build_index, load_pair, parse_spec
from i2iuda.errors import DataError, UserError
from i2iuda.io import save_palette_png


def test_parse_spec():
    s = parse_spec("gta5:/data/GTA5:train,limit=3000,seed=7")
    assert (s.kind, s.root, s.split, s.limit, s.seed) == ("gta5", "/data/GTA5", "train", 3000, 7)
    assert parse_spec("folder:/a/b").split == ""
    assert parse_spec(str(s)) == s
    with pytest.raises(UserError, match="KIND:PATH"):
        parse_spec("nope:/x")
    with pytest.raises(UserError, match="bad option"):
        parse_spec("gta5:/x,limit=many")


def test_cityscapes_reader_on_real_sample(shared_data):
    index = build_index(f"cityscapes:{shared_data / 'cityscapes'}:val")
    assert len(index.samples) == 1 and index.label_format == "cityscapes"
    image, label = load_pair(index.samples[0], index.label_format)
    assert image.shape == (128, 256, 3) and image.dtype == np.uint8
    raw = np.asarray(Image.open(index.samples[0].label))
    assert set(np.unique(raw)) == {1, 2, 3, 4, 7, 8, 11, 13, 17, 20, 21, 23, 24, 26}
    assert set(np.unique(label)) == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
    official = {1: 255, 2: 255, 3: 255, 4: 255, 7: 0, 8: 1, 11: 2, 13: 4, 17: 5, 20: 7, 21: 8, 23: 10, 24: 11, 26: 13}
    expected = np.vectorize(official.get)(raw)
    assert np.array_equal(label, expected)


def test_cityscapes_wrong_split_and_root(shared_data, tmp_path):
    with pytest.raises(DataError, match=r"leftImg8bit/train/"):
        build_index(f"cityscapes:{shared_data / 'cityscapes'}:train")
    with pytest.raises(DataError, match="does not exist"):
        build_index(f"cityscapes:{tmp_path / 'missing'}:val")


def make_gta5(root: Path, frames: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    pal = np.random.default_rng(0).integers(0, 255, (256, 3)).astype(np.uint8)
    for name, img in frames.items():
        Image.fromarray(img).save(root / "images" / name)
    for name, ids in labels.items():
        save_palette_png(root / "labels" / name, ids, pal)
    return root


def test_gta5_reads_palette_indices_not_colours(shared_data, tmp_path):
    frame = np.asarray(Image.open(shared_data / "frames" / "gta5_1914x1052.png").convert("RGB"))[:64, :96]
    ids = np.random.default_rng(1).choice([7, 8, 11, 23, 26, 0, 5], size=(64, 96)).astype(np.uint8)
    root = make_gta5(tmp_path / "gta", {"00001.png": frame}, {"00001.png": ids})
    index = build_index(f"gta5:{root}")
    image, label = load_pair(index.samples[0], index.label_format)
    assert np.array_equal(image, frame)
    assert np.array_equal(label, L.CITYSCAPES_LUT[ids])


def test_gta5_pitfalls_reported_not_crashed(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda h, w: rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
    ids = lambda h, w: np.full((h, w), 7, np.uint8)
    root = make_gta5(
        tmp_path / "gta",
        {"00001.png": img(40, 60), "00002.png": img(40, 60), "00003.png": img(40, 60),
         "15188.png": np.zeros((40, 60, 3), np.uint8), "00005.png": np.full((40, 60, 3), 255, np.uint8)},
        {"00001.png": ids(40, 60), "00002.png": ids(38, 61), "15188.png": ids(40, 60), "00005.png": ids(40, 60),
         "00009.png": ids(40, 60)},
    )
    (root / "images" / "00004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "labels" / "00004.png").write_bytes(b"not a png")
    index = build_index(f"gta5:{root}")
    text = "\n".join(index.problems)
    assert "15188.png" in text and "blank" in text  # known blank frame left out
    assert "without a label" in text and "00003.png" in text
    assert "without an image" in text and "00009.png" in text
    assert [s.image.name for s in index.samples] == ["00001.png", "00002.png", "00004.png", "00005.png"]

    report = check_dataset(f"gta5:{root}", workers=0, progress=False)
    problems = "\n".join(report.problems)
    assert "00002.png: label is 61x38 but image is 60x40" in problems
    assert "00004.png: unreadable image" in problems
    assert "00005.png: blank frame" in problems
    assert report.frames == 4 and report.image_sizes[(60, 40)] == 3

    # the mismatched label is resized to its image, and the corrupt frame is skipped
    ds = SegmentationDataset(index)
    assert ds[1]["mask"].shape == (40, 60)
    item = ds[2]
    assert item["name"] == "images/00005.png"


def test_gta5_wrong_root_names_the_subfolder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="'labels/'"):
        build_index(f"gta5:{tmp_path}")
    with pytest.raises(DataError, match="'images/'"):
        build_index(f"gta5:{tmp_path / 'images'}")


def test_gta5_rgb_colour_labels_read_through_the_official_table(shared_data, tmp_path):
    """Some GTA5 copies store labels as RGB colours: they read as the palette-index label they
    stand for; a colour not in the table becomes ignore and is counted by data check."""
    ids = np.asarray(Image.open(shared_data / "cityscapes" / "gtFine" / "val" / "frankfurt" /
                                "frankfurt_000000_000294_gtFine_labelIds.png"))
    colours = np.zeros((256, 3), np.uint8)
    for label_id, colour in L.CITYSCAPES_ID_COLOURS.items():
        colours[label_id] = colour
    h, w = ids.shape
    frame = np.zeros((h, w, 3), np.uint8) + 100
    root = make_gta5(tmp_path / "g", {"00001.png": frame, "00002.png": frame}, {})
    save_palette_png(root / "labels" / "00001.png", ids, colours)  # the real data set's form
    rgb = colours[ids].copy()
    rgb[:3, :5] = (1, 2, 3)  # 15 pixels of a colour the table does not have
    Image.fromarray(rgb).save(root / "labels" / "00002.png")
    index = build_index(f"gta5:{root}")
    _, from_palette = load_pair(index.samples[0], index.label_format)
    _, from_colours = load_pair(index.samples[1], index.label_format)
    expected = from_palette.copy()
    expected[:3, :5] = L.IGNORE
    assert np.array_equal(from_colours, expected)
    assert set(np.unique(from_palette)) == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}  # the README's trainIds
    report = check_dataset(f"gta5:{root}", workers=0, progress=False)
    assert report.unknown_colour_pixels == 15
    assert any("00002.png: 15 pixels of colours not in the official table" in p for p in report.problems)
    assert "(15 of unknown colours)" in format_report(report)


def test_gta5_label_of_another_mode_is_a_clear_error(tmp_path):
    root = make_gta5(tmp_path / "g", {"00001.png": np.zeros((8, 8, 3), np.uint8) + 9}, {})
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(root / "labels" / "00001.png")  # 16-bit grey
    index = build_index(f"gta5:{root}")
    with pytest.raises(DataError, match="00001.png: label is a I"):
        load_pair(index.samples[0], index.label_format)


def test_synthia_16bit_red_channel(tmp_path):
    (tmp_path / "RGB").mkdir()
    (tmp_path / "GT" / "LABELS").mkdir(parents=True)
    Image.fromarray(np.full((4, 6, 3), 80, np.uint8)).save(tmp_path / "RGB" / "0000001.png")
    red = np.array([[3, 4, 2, 21, 5, 7], [15, 9, 6, 1, 10, 17], [8, 19, 12, 11, 16, 18], [20, 0, 22, 13, 14, 3]], np.uint16)
    bgr = np.stack([np.full_like(red, 1000), np.full_like(red, 40000), red], -1)  # B, G = instance ids etc.
    cv2.imwrite(str(tmp_path / "GT" / "LABELS" / "0000001.png"), bgr)
    index = build_index(f"synthia:{tmp_path}")
    _, label = load_pair(index.samples[0], index.label_format)
    assert label.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 10, 11, 12], [13, 15, 17, 18, 255, 255],
                              [255, 255, 255, 255, 255, 0]]


def test_holdout_and_subset_are_deterministic(synth_root):
    train = build_index(f"synthetic:{synth_root}:source-train")
    val = build_index(f"synthetic:{synth_root}:source-val")
    names_t, names_v = {s.rel for s in train.samples}, {s.rel for s in val.samples}
    assert names_t.isdisjoint(names_v) and len(names_t) + len(names_v) == 40 and names_v
    a = build_index(f"synthetic:{synth_root}:source-train,limit=10,seed=3")
    b = build_index(f"synthetic:{synth_root}:source-train,limit=10,seed=3")
    c = build_index(f"synthetic:{synth_root}:source-train,limit=10,seed=4")
    assert [s.rel for s in a.samples] == [s.rel for s in b.samples] != [s.rel for s in c.samples]
    assert {s.rel for s in a.samples} <= names_t


def test_folder_reader(shared_data):
    index = build_index(f"folder:{shared_data / 'frames'}")
    assert not index.labelled and len(index.samples) == 2
    item = SegmentationDataset(index)[0]
    assert "mask" not in item and item["image"].shape == (1024, 2048, 3)


def test_data_check_on_real_sample(shared_data):
    report = check_dataset(f"cityscapes:{shared_data / 'cityscapes'}:val", workers=0, progress=False)
    text = format_report(report)
    assert "frames       1 (labelled)" in text and "256x128 (1)" in text and "problems     none" in text
    assert report.class_frequency["road"] > 0.1 and report.class_frequency["train"] == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "i2iuda.cli", *args], capture_output=True, text=True)


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    r = run_cli("data", "check", f"gta5:{tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "expected sub-folder 'images/'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("--debug", "data", "check", f"gta5:{tmp_path}")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = run_cli("synth", "--out", str(tmp_path), "--size", "big")
    assert r.returncode == 2 and "--size 'big'" in r.stderr


def test_16_bit_frames_are_read_at_their_depth_and_wider_ones_refused(tmp_path):
    """A 16-bit grey frame read by a plain RGB conversion clips to white: it is read at its depth
    (its high byte), as PIL reads 16-bit colour; 32-bit integer and float frames are refused."""
    from i2iuda.data.datasets import read_image

    ramp = (np.arange(32 * 64).reshape(32, 64) * 31).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), ramp)
    cv2.imwrite(str(tmp_path / "colour16.png"), np.stack([ramp, ramp // 2, ramp // 3], -1))  # BGR on disk
    grey = read_image(tmp_path / "grey16.png")
    assert grey.dtype == np.uint8 and np.array_equal(grey[..., 0], (ramp >> 8).astype(np.uint8))
    assert grey.mean() < 200 and (grey == grey[..., :1]).all()  # not white, and grey
    colour = read_image(tmp_path / "colour16.png")
    assert np.array_equal(colour[..., 0], (ramp // 3 >> 8).astype(np.uint8))  # R, from the B-G-R file
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide\.tif: a 32-bit integer image; expected 8- or 16-bit frames"):
        read_image(tmp_path / "wide.tif")
    # the data check no longer calls such a set blank: it reads the ramp
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), ramp)
        save_palette_png(root / "labels" / f"{i:05d}.png", np.full((32, 64), 7, np.uint8), np.zeros((256, 3), np.uint8))
    assert not any("blank" in p for p in check_dataset(f"gta5:{root}", workers=0).problems)


def test_labels_that_read_as_nothing_are_refused_before_training(tmp_path):
    """GTA5 labels given as RGB images of colours that are not its label colours read as all ignore:
    a training run refuses them at its start, in one line, instead of training to NaN."""
    from i2iuda.config import load_config
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter

    root = tmp_path / "gta"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(np.full((32, 64, 3), (1, 2, 3), np.uint8)).save(root / "labels" / f"{i:05d}.png")
    cfg = load_config(SegmentConfig, None, [f"train=gta5:{root}", f"val=gta5:{root}", "model.backbone=tu-resnet10t",
                                            "data.size=[32,64]", "data.crop=[32,64]", "data.workers=0", "device=cpu"])
    with pytest.raises(DataError, match=r"all 6 labels sampled \(00000\.png, \.\.\.\) read as ignore \(255\) everywhere; "
                                        r"12288 of their pixels have colours not in the label colour table"):
        train_segmenter(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
