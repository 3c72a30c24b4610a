"""Translations that look right and keep their meaning: the generator's up-sampling options against
their definitions, the label-cycle loss recomputed, and the measures (checkerboard, colour cast,
flip tables) on hand-made cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from i2iuda import appearance
from i2iuda.metrics import flip_table
from i2iuda.segmentation.models import FrozenSegmenter
from i2iuda.translation.cyclegan import CycleGANConfig, build_cyclegan
from i2iuda.translation.gan import BlurPool, BlurUpsample, Discriminator, Generator


def test_the_samplings_are_built_as_their_references():
    """transposed: ConvTranspose2d(3, stride 2) up; resize: nearest x2 then a 3x3 conv; antialias
    (CUT's reference): stride-1 convs and a [1,2,1]^2 blur-pool down (G and D), a [1,3,3,1]^2
    transposed blur then a 3x3 conv up; the same parameters in all three."""
    kinds = {s: [type(m).__name__ for m in Generator(8, 2, s).model]
             for s in ("transposed", "resize", "bilinear", "conv_bilinear", "antialias")}
    assert kinds["transposed"].count("ConvTranspose2d") == 2 and "Upsample" not in kinds["transposed"]
    for s in ("resize", "bilinear"):
        assert kinds[s].count("Upsample") == 2 and "ConvTranspose2d" not in kinds[s]
    modes = {s: {m.mode for m in Generator(8, 2, s).modules() if isinstance(m, torch.nn.Upsample)}
             for s in ("resize", "bilinear", "conv_bilinear")}
    assert modes == {"resize": {"nearest"}, "bilinear": {"bilinear"}, "conv_bilinear": {"bilinear"}}
    # conv_bilinear convolves before it resizes (at a quarter of the pixels), the resizes after
    up = [k for k in kinds["conv_bilinear"] if k in ("Conv2d", "Upsample")][-5:-1]
    assert up == ["Conv2d", "Upsample", "Conv2d", "Upsample"]
    assert [k for k in kinds["bilinear"] if k in ("Conv2d", "Upsample")][-5:-1] == ["Upsample", "Conv2d", "Upsample", "Conv2d"]
    assert kinds["antialias"].count("BlurUpsample") == 2 and kinds["antialias"].count("BlurPool") == 2
    counts = {s: sum(p.numel() for p in Generator(8, 2, s).parameters()) for s in kinds}
    assert len(set(counts.values())) == 1  # the fixed blurs are buffers, not parameters
    assert all(c.stride == (1, 1) for c in Generator(8, 2, "antialias").modules() if isinstance(c, torch.nn.Conv2d))
    d = Discriminator(8, 3, "antialias")
    assert sum(isinstance(m, BlurPool) for m in d.modules()) == 3
    assert all(c.stride == (1, 1) for c in d.modules() if isinstance(c, torch.nn.Conv2d))
    x = torch.randn(1, 3, 64, 64)
    assert d(x).shape == Discriminator(8, 3)(x).shape  # the same score map


def test_the_blurs_are_the_references_filters():
    """CUT's Downsample: reflect pad 1, [1,2,1]x[1,2,1]/16, stride 2; its Upsample: replicate pad 1,
    [1,3,3,1]x[1,3,3,1]/64 x 4 transposed with stride 2, padding 2, cropped [1:-1]."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 8)
    row = torch.tensor([1.0, 2.0, 1.0])
    f = (row[:, None] * row[None, :] / 16)[None, None].repeat(2, 1, 1, 1)
    want = nnf.conv2d(nnf.pad(x, (1, 1, 1, 1), mode="reflect"), f, stride=2, groups=2)
    assert torch.allclose(BlurPool(2)(x), want, atol=1e-6) and want.shape[-2:] == (3, 4)
    row = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = (row[:, None] * row[None, :] / 64 * 4)[None, None].repeat(2, 1, 1, 1)
    want = nnf.conv_transpose2d(nnf.pad(x, (1, 1, 1, 1), mode="replicate"), f, stride=2, padding=2, groups=2)
    got = BlurUpsample(2)(x)
    assert got.shape[-2:] == (12, 16) and torch.allclose(got, want[:, :, 1:, 1:][:, :, :-1, :-1], atol=1e-6)
    assert torch.allclose(BlurUpsample(1)(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 8, 8))  # a flat field stays flat


def test_a_transposed_up_sampling_checkerboards_and_the_others_do_not():
    """Odena et al.: a stride-2 transposed 3x3 kernel with all-ones weights gives every other output
    pixel another number of taps; the resize and the anti-aliased up-sampling give all the same."""
    x = torch.ones(1, 1, 8, 8)
    t = torch.nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)
    torch.nn.init.ones_(t.weight)
    assert len(torch.unique(t(x)[0, 0, 2:-2, 2:-2])) > 1  # 1, 2 and 4 taps: the checkerboard
    r = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(1, 1, 3, padding=1, bias=False))
    torch.nn.init.ones_(r[1].weight)
    assert len(torch.unique(r(x)[0, 0, 2:-2, 2:-2])) == 1
    assert len(torch.unique(BlurUpsample(1)(x)[0, 0, 2:-2, 2:-2].round(decimals=5))) == 1
    b = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Conv2d(1, 1, 3, padding=1, bias=False))
    torch.nn.init.ones_(b[1].weight)
    assert len(torch.unique(b(x)[0, 0, 2:-2, 2:-2].round(decimals=5))) == 1
    c = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1, bias=False), torch.nn.Upsample(scale_factor=2, mode="bilinear"))
    torch.nn.init.ones_(c[0].weight)
    assert len(torch.unique(c(x)[0, 0, 4:-4, 4:-4].round(decimals=5))) == 1


def test_a_residual_generator_starts_as_the_identity_and_then_paints_a_change():
    """model.residual: G(x) = tanh(atanh(x) + net(x)) with net's output convolution zeroed, so G and
    F return their input at step 0 (to the clamp at 0.999) where the paper's generators redraw the
    frame; training moves them off it, and the output stays inside tanh's (-1, 1)."""
    torch.manual_seed(0)
    x, t = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    cfg = CycleGANConfig(ngf=8, ndf=8, n_blocks=1, sampling="bilinear", residual=True, lr=1e-3)
    m = build_cyclegan(cfg, torch.device("cpu"))
    for g in (m.gens.G, m.gens.F):
        assert torch.allclose(g(x), x.clamp(-0.999, 0.999), atol=1e-6)
    plain = build_cyclegan(CycleGANConfig(ngf=8, ndf=8, n_blocks=1, sampling="bilinear"), torch.device("cpu"))
    assert (plain.gens.G(x) - x).abs().mean() > 0.3
    for _ in range(3):
        m.step({"source": x, "target": t})
    with torch.no_grad():
        y = m.gens.G(x)
    assert (y - x).abs().mean() > 1e-3 and y.abs().max() < 1
    assert "residual generators" in m.describe()


def test_the_demo_and_presets_up_sample_as_chosen_and_the_compared_studies_as_the_paper():
    """The demo's CycleGAN is the checkerboard-free residual one (docs/translation.md, "What the demo uses"),
    the CPU presets up-sample as the 3-seed ablation chose (CycleGAN anti-aliased, CUT by resize-
    convolution), CUT's paper preset as its reference code; the studies whose numbers
    docs/results.md holds keep the paper's transposed convolution."""
    from pathlib import Path

    from i2iuda.cli import DEFAULT_STUDY  # what `make demo` runs
    from i2iuda.config import load_config
    from i2iuda.study import Study, StudyConfig
    from i2iuda.translation.train import TranslateConfig

    root = Path(__file__).resolve().parents[1]

    def model(preset: Path, arm: str):
        cfg = load_config(StudyConfig, preset, [])
        return Study.resolve(cfg, root / "runs" / "unused").arms[arm].translate.model

    def sampling(preset: Path, arm: str) -> str:
        return model(preset, arm).sampling

    demo = model(DEFAULT_STUDY, "cyclegan")
    assert demo.sampling == "bilinear" and demo.residual and not demo.identity  # "What the demo uses"
    assert demo.d_layers == 2  # "The class cast"
    for preset in ("study_compare_cpu.yaml", "study_selftrain_cpu.yaml", "study_online_cpu.yaml", "study_daformer_cpu.yaml"):
        paper = model(root / "configs" / preset, "cyclegan")
        assert paper.sampling == "transposed" and not paper.residual and paper.identity, preset
        assert paper.d_layers == 1, preset  # the CPU preset's 16x16 patches (docs/translation.md)
    assert sampling(root / "configs" / "study_look_demo_cpu.yaml", "cg_transposed_gain005") == "transposed"
    assert sampling(root / "configs" / "study_compare_cpu.yaml", "cut") == "transposed"
    presets = {"cyclegan_cpu.yaml": "antialias", "cut_cpu.yaml": "resize", "cut_paper.yaml": "antialias",
               "cyclegan_paper.yaml": "transposed"}
    for preset, chosen in presets.items():
        assert load_config(TranslateConfig, root / "configs" / preset).typed().model.sampling == chosen, preset


def test_the_checkerboard_score_finds_a_periodic_pattern_and_not_a_natural_frame():
    rng = np.random.default_rng(0)
    smooth = [(np.cumsum(np.cumsum(rng.normal(size=(64, 128, 3)), 0), 1)) for _ in range(8)]  # 1/f-like
    frames = [((f - f.min()) / (f.max() - f.min()) * 200 + 20).astype(np.uint8) for f in smooth]
    clean = appearance.checkerboard_db(frames)
    yy, xx = np.mgrid[:64, :128]
    checker = ((yy + xx) % 2 * 2 - 1) * 6 + ((yy // 2 + xx // 2) % 2 * 2 - 1) * 4  # 2-D, periods 2 and 4
    stripes = (yy % 4 // 2 * 2 - 1) * 10  # horizontal stripes (a brick texture): not a checkerboard
    marked = [np.clip(f.astype(int) + checker[..., None], 0, 255).astype(np.uint8) for f in frames]
    striped = [np.clip(f.astype(int) + stripes[..., None], 0, 255).astype(np.uint8) for f in frames]
    assert clean < 2 and appearance.checkerboard_db(marked) > clean + 10
    assert appearance.checkerboard_db(striped) < clean + 1
    assert appearance.checkerboard_db([]) is None


def test_the_colour_cast_on_hand_made_frames():
    grey = [np.full((8, 8, 3), 128, np.uint8)]
    magenta = [np.full((8, 8, 3), (150, 110, 150), np.uint8)]
    g, m = appearance.colour(grey), appearance.colour(magenta)
    assert abs(g["a"]) < 0.01 and abs(g["b"]) < 0.01 and g["chroma"] < 0.01
    shift = appearance.colour_shift(m, g)
    assert shift["cast"] == pytest.approx(np.hypot(m["a"], m["b"])) and m["a"] > 10
    assert appearance.hue_name(shift["cast_hue_deg"]) in ("magenta", "blue-violet", "magenta-red")
    assert shift["chroma"] > 10


def test_the_class_cast_sees_what_the_frames_mean_colour_hides():
    """Two classes whose colours a 'translator' swapped: the frames' mean colour is the reference's
    (no cast), each class is far from its own colour (the class cast)."""
    red, green = (200, 60, 60), (60, 160, 60)
    label = np.zeros((8, 8), np.uint8)
    label[:, 4:] = 1
    label[0, 0] = 255  # ignore: left out
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[label == 0], frame[label == 1], frame[0, 0] = red, green, (0, 0, 255)
    swapped = frame.copy()
    swapped[label == 0], swapped[label == 1] = green, red
    ref = appearance.class_colour([(frame, label)])
    assert ref["pixels"][:2] == [31, 32] and sum(ref["pixels"]) == 63
    same = appearance.class_cast(ref, ref, names=["red", "green"] + ["?"] * 17)
    assert same["cast"] == pytest.approx(0, abs=1e-6) and same["lightness"] == pytest.approx(0, abs=1e-6)
    moved = appearance.class_cast(appearance.class_colour([(swapped, label)]), ref, names=["red", "green"] + ["?"] * 17)
    lab = appearance.colour([np.array([[red]], np.uint8)]), appearance.colour([np.array([[green]], np.uint8)])
    apart = np.hypot(lab[0]["a"] - lab[1]["a"], lab[0]["b"] - lab[1]["b"])
    assert moved["cast"] == pytest.approx(apart, rel=1e-4) and apart > 50
    assert {w["class"] for w in moved["worst"]} == {"red", "green"}
    # the whole frames' mean colour barely moved (one pixel of 64 apart): no cast there
    whole = appearance.colour_shift(appearance.colour([swapped]), appearance.colour([frame]))
    assert whole["cast"] < 0.1 * moved["cast"]
    # a class the reference never shows does not count
    only_red = np.zeros((8, 8), np.uint8)
    half = appearance.class_colour([(frame, only_red)])
    assert appearance.class_cast(appearance.class_colour([(frame, label)]), half)["worst"][0]["class"] == 0


def test_edges_kept_drops_for_smeared_and_streaked_frames_and_not_for_a_colour_change():
    import cv2

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :128]
    frames = []
    for _ in range(4):  # flat blocks with sharp edges, as the benchmark's frames
        f = np.zeros((64, 128, 3), np.uint8)
        for _ in range(6):
            y, x, h, w = rng.integers(0, 48), rng.integers(0, 112), rng.integers(8, 32), rng.integers(8, 48)
            f[y:y + h, x:x + w] = rng.integers(0, 255, 3)
        frames.append(f)
    kept = lambda made: appearance.edges_kept(zip(frames, made))  # noqa: E731
    assert kept(frames) == pytest.approx(1.0)
    recoloured = [255 - f for f in frames]  # every colour changed, the same edges
    smeared = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames]
    streaks = ((xx + yy) % 6 < 2)[..., None] * 120  # diagonal streaks painted over the frame
    streaked = [np.clip(f.astype(int) + streaks, 0, 255).astype(np.uint8) for f in frames]
    assert kept(recoloured) > 0.99
    assert kept(smeared) < 0.8 and kept(streaked) < 0.8
    assert kept(rng.permutation(frames)) < 0.5  # unrelated frames
    # a source of another size is resized to its translation's; no pairs, or no edges: no score
    assert appearance.edges_kept(zip([cv2.resize(f, (256, 128), interpolation=cv2.INTER_NEAREST) for f in frames],
                                     frames)) > 0.8
    assert appearance.edges_kept([]) is None and appearance.edges_kept([(frames[0], np.zeros_like(frames[0]))]) is None


def test_the_flip_table_from_a_hand_made_confusion():
    conf = np.zeros((3, 3))
    conf[0] = [80, 20, 0]  # road: 20% read as sidewalk
    conf[1] = [0, 100, 0]
    conf[2] = [5, 0, 95]  # building: 5% read as road
    t = flip_table(conf, ("road", "sidewalk", "building"), top=5)
    assert t["kept"] == {"road": 80.0, "sidewalk": 100.0, "building": 95.0}
    assert [(f["from"], f["to"], f["share"]) for f in t["top"]] == [("road", "sidewalk", 20.0), ("building", "road", 5.0)]


def test_the_label_cycle_loss_is_procsts():
    """L_lc = CE(f(F(G(x_s))), y_s) with the frozen source segmenter f, weighted, in the step's
    generator loss; f's weights get no gradient, G's and F's do."""
    from dataclasses import replace

    torch.manual_seed(0)
    f = FrozenSegmenter(torch.nn.Sequential(torch.nn.Conv2d(3, 19, 1), torch.nn.BatchNorm2d(19)))
    m = build_cyclegan(CycleGANConfig(ngf=8, ndf=8, n_blocks=1, d_layers=1), torch.device("cpu"))
    m.cfg, m.f = replace(m.cfg, label_cycle=2.0), f
    s, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.randint(0, 19, (2, 16, 16))
    y[:, :3] = 255
    with torch.no_grad():
        want = 2.0 * nnf.cross_entropy(f(m.gens.F(m.gens.G(s))), y, ignore_index=255)
    loss = m.step({"source": s, "target": t, "source_label": y})
    assert float(loss["label_cycle"]) == pytest.approx(float(want), rel=1e-5)
    assert all(p.grad is None for p in f.parameters())
    from i2iuda.translation.cyclegan import CycleGAN

    cfg = CycleGANConfig(label_cycle=1.0)
    assert CycleGAN.source_labels(cfg) and CycleGAN.judge_run(cfg) == ""  # the study names its source-only run


def test_cut_reads_the_references_layers_with_anti_aliased_sampling():
    """With CUT's own sampling, its generator's module indices are the reference's: 0, 4, 8, 12, 16."""
    from i2iuda.translation.cut import CUTConfig, NCEGenerator

    g = NCEGenerator(CUTConfig(n_blocks=9, sampling="antialias", ngf=8))
    assert g.layers == [0, 4, 8, 12, 16]
    assert NCEGenerator(CUTConfig(n_blocks=9, ngf=8)).layers == [0, 4, 7, 10, 14]
    feats = __import__("i2iuda.translation.cut", fromlist=["encode"]).encode(g.G, torch.randn(1, 3, 32, 32), g.layers)
    assert [f.shape[1] for f in feats] == [3, 16, 32, 32, 32] and feats[1].shape[-1] == 32  # 4: before its blur-pool
