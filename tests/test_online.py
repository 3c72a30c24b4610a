"""Online self-training (segmentation/online.py): each part against its definition, exact
resume, DDP, and a CLI run that segment eval reads."""
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from i2iuda.config import load_config
from i2iuda.segmentation import online as O
from i2iuda.study import Study, StudyConfig

TINY = ["model.backbone=tu-resnet10t", "model.encoder_depth=4", "data.size=[32,64]", "data.crop=[32,64]",
        "data.batch_size=2", "data.workers=0", "device=cpu", "optimizer=adamw", "lr=0.004", "log_every=1"]


def data(root):
    return [f"train=synthetic:{root}:source-train", f"val=synthetic:{root}:source-val",
            f"target=synthetic:{root}:target-train"]


def test_ema_update_is_the_formula_from_the_first_step():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    phi = [p.detach().clone() for p in teacher.parameters()]
    for t in range(5):
        with torch.no_grad():  # the student moves between updates
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        theta = [p.detach().clone() for p in student.parameters()]
        a = O.ema_update(teacher, student, t, alpha=0.6)
        want_a = min(1 - 1 / (t + 1), 0.6)  # 0, 0.5, 0.6 (capped), 0.6, ...
        assert a == pytest.approx(want_a)
        phi = [want_a * f + (1 - want_a) * s for f, s in zip(phi, theta)]
        for got, want in zip(teacher.parameters(), phi):
            assert torch.allclose(got, want, atol=1e-6)
        if t == 0:  # alpha_0 = 0: the teacher is the student after the first step
            assert all(torch.equal(a_, b_) for a_, b_ in zip(teacher.parameters(), student.parameters()))


def test_classmix_pastes_half_the_classes_of_each_frame_and_mixes_labels_as_defined():
    y_s = torch.tensor([[[0, 0, 2, 2], [5, 5, 255, 2]], [[1, 1, 1, 1], [1, 1, 1, 1]]])
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        masks = O.classmix_masks(y_s, gen)
        chosen = set(y_s[0][masks[0]].tolist())
        assert len(chosen) == 2 and 255 not in chosen  # ceil(3 / 2) of {0, 2, 5}; ignore is no class
        assert torch.equal(masks[0], torch.isin(y_s[0], torch.tensor(sorted(chosen))))  # all their pixels, no other
        assert masks[1].all()  # one class: ceil(1 / 2) = 1, the whole frame
        seen |= {tuple(sorted(chosen))}
    assert len(seen) == 3  # every pair gets drawn
    x_s, x_t = torch.full((2, 3, 2, 4), 1.0), torch.full((2, 3, 2, 4), -1.0)
    y_t, w_t = torch.full_like(y_s, 7), torch.full((2, 2, 4), 0.25)
    x_m, y_m, w_m = O.class_mix(x_s, y_s, x_t, y_t, w_t, masks)
    m = masks[:, None].expand_as(x_m)
    assert (x_m[m] == 1).all() and (x_m[~m] == -1).all()
    assert torch.equal(y_m[masks], y_s[masks]) and (y_m[~masks] == 7).all()
    assert (w_m[masks] == 1).all() and (w_m[~masks] == 0.25).all()


def test_confidence_weight_is_the_share_of_confident_pixels_of_the_batch():
    probs = torch.zeros(2, 3, 2, 2)
    probs[:, 0] = 0.5
    probs[:, 1] = 0.5
    probs[0, 0, 0, 0], probs[0, 1, 0, 0] = 0.99, 0.01  # 3 of the 8 pixels are confident (>= 0.968)
    probs[1, 2, 1, 1], probs[1, :2, 1, 1] = 0.968, 0.016
    probs[1, 2, 0, 1], probs[1, :2, 0, 1] = 0.97, 0.015
    assert float(O.confidence_weight(probs, 0.968)) == pytest.approx(3 / 8)
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[1] = False  # the second frame is a crop's padding: out of the share
    assert float(O.confidence_weight(probs, 0.968, valid)) == pytest.approx(1 / 4)


def test_a_padded_target_crop_gets_no_pseudo_label_and_no_weight():
    from i2iuda.data.transforms import AugmentConfig, train_transform
    from i2iuda.runtime import init_runtime

    t = O.Unlabelled(train_transform(AugmentConfig(size=(32, 64), scale=(0.5, 0.5), crop=(32, 64), hflip=0)))
    image, mask = t(np.full((32, 64, 3), 128, np.uint8), None)
    pad = mask == 255
    assert 0.5 < float(pad.float().mean()) < 0.9 and (mask[~pad] == 0).all()  # half size: three quarters padding
    cfg = load_config(O.OnlineConfig, None, TINY + ["train=x", "val=x", "target=x"])
    trainer = O.OnlineTrainer(cfg, init_runtime("cpu"), 10, None, None)
    labels, weight, q = trainer.pseudo_labels(image[None], ~pad[None])
    assert (labels[0][pad] == 255).all() and (labels[0][~pad] < 19).all()


def test_rare_class_probabilities_from_hand_made_frequencies():
    freq = {0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05, 4: 0.0}
    p = O.rare_class_probabilities(freq, 0.1)
    e = {c: math.exp((1 - f) / 0.1) for c, f in freq.items() if f > 0}
    assert p.keys() == e.keys()  # a class absent from the source is never drawn
    for c in e:
        assert p[c] == pytest.approx(e[c] / sum(e.values()), rel=1e-9)
    assert p[3] > p[2] > p[1] > p[0]
    sharp = O.rare_class_probabilities(freq, 0.01)  # DAFormer's T: the rarest class dominates
    assert sharp[3] > 0.99


def test_mic_masks_the_share_of_patches_asked_for_in_blocks():
    gen = torch.Generator().manual_seed(0)
    keep = O.mic_mask((64, 30, 50), 0.7, 4, gen)
    assert keep.shape == (64, 1, 30, 50) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert float(1 - keep[:, :, :28, :48].mean()) == pytest.approx(0.7, abs=0.02)  # whole blocks
    blocks = keep[:, :, :28, :48].reshape(64, 1, 7, 4, 12, 4)
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()  # constant within each 4 x 4 block


def test_strong_augmentation_is_seeded_and_keeps_the_frame():
    x = torch.rand(3, 3, 16, 32) * 2 - 1
    s = O.OnlineSettings()
    a = O.strong_augment(x, torch.Generator().manual_seed(1), s)
    b = O.strong_augment(x, torch.Generator().manual_seed(1), s)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    off = O.OnlineSettings(jitter_p=0.0, blur_p=0.0)
    assert torch.allclose(O.strong_augment(x, torch.Generator(), off), x, atol=1e-6)


def test_resume_mid_run_is_exact(synth_root, tmp_path):
    cfg = load_config(O.OnlineConfig, None, TINY + data(synth_root) + [
        "epochs=2", "steps_per_epoch=3", "online.rare_class_sampling=true", "online.mic=true"])
    O.train_online(cfg, tmp_path / "once", progress=False)
    O.train_online(cfg, tmp_path / "twice", stop_at_step=4, progress=False)
    O.train_online(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["trainer"] for r in ("once", "twice"))
    for part in ("model", "teacher"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["gen"], b["gen"]) and a["t"] == b["t"] == 6 and a["history"] == b["history"]
    # the teacher is not the student, and it moved (the EMA of 6 students)
    assert any(not torch.equal(a["model"][k], a["teacher"][k]) for k in a["model"] if k.endswith("weight"))


def test_ddp_two_gloo_processes_end_with_equal_students_and_teachers(synth_root, tmp_path):
    script = tmp_path / "ddp_online.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        from i2iuda.config import load_config
        from i2iuda.runtime import unwrap
        from i2iuda.segmentation import online as O
        original = O.OnlineTrainer.summary
        def summary(self):  # every rank keeps its own nets
            torch.save({"student": unwrap(self.model).state_dict(), "teacher": self.teacher.state_dict()},
                       f"{sys.argv[1]}.rank{dist.get_rank()}.pt")
            return original(self)
        O.OnlineTrainer.summary = summary
        O.train_online(load_config(O.OnlineConfig, None, sys.argv[2:]), sys.argv[1], progress=False)
    """))
    over = TINY + data(synth_root) + ["epochs=1", "steps_per_epoch=3", "online.mic=true"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(tmp_path / "run"), *over], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"run.rank{k}.pt", weights_only=True) for k in (0, 1))
    for part in ("student", "teacher"):
        for k in a[part]:
            assert torch.allclose(a[part][k].float(), b[part][k].float(), atol=1e-6), (part, k)
    assert (tmp_path / "run" / "checkpoints" / "student.safetensors").exists()
    assert (tmp_path / "run" / "checkpoints" / "teacher.safetensors").exists()


def test_the_cli_trains_a_run_that_segment_eval_reads(synth_root, tmp_path):
    from i2iuda.segmentation.evaluate import EvalProtocol, run_eval

    run = tmp_path / "adapt"
    r = subprocess.run([sys.executable, "-m", "i2iuda.cli", "segment", "adapt", "--out", str(run),
                        *[f"--{o.split('=')[0]}={o.split('=', 1)[1]}" for o in data(synth_root)],
                        *TINY, "epochs=1", "steps_per_epoch=2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the last student" in r.stdout
    m = run_eval(run, f"synthetic:{synth_root}:target-val", tmp_path / "eval", EvalProtocol(), pictures=0,
                 device="cpu", workers=0, progress=False)
    assert 0 <= m["mIoU"] <= 100
    # bad values: one line, rc 2
    bad = subprocess.run([sys.executable, "-m", "i2iuda.cli", "segment", "adapt", "--out", str(tmp_path / "x"),
                          *[f"--{o.split('=')[0]}={o.split('=', 1)[1]}" for o in data(synth_root)], *TINY,
                          "online.threshold=1.5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "online.threshold=1.5: out of range" in bad.stderr


def test_the_cpu_online_presets_train_at_the_papers_batch_on_the_demos_source_frames(tmp_path):
    # The schedule study (docs/results.md) chose 2 (+ 2) frames for the 2,880 source frames the demo's
    # segmenters see, for every arm of these presets; the schedule preset's other arms are its stated
    # batches and multiples of those frames.
    configs = Path(__file__).resolve().parents[1] / "configs"
    for name in ("study_online_cpu.yaml", "study_daformer_cpu.yaml", "study_schedule_cpu.yaml"):
        study = Study.resolve(load_config(StudyConfig, configs / name), tmp_path / name)
        so = study.arms["source_only"].segment_config()
        so_frames = so.data.batch_size * so.epochs * so.steps_per_epoch
        assert (so.data.batch_size, so_frames) == (2, 2880), name
        online = {n: a.segment_config() for n, a in study.arms.items() if a.KIND == "online"}
        assert online, name
        for arm, seg in online.items():
            frames = seg.data.batch_size * seg.epochs * seg.steps_per_epoch
            named = re.search(r"_b(\d)(?:x(\d))?$", arm)  # ARM_bB or ARM_bBxK: batch B, K times the frames
            batch, times = (int(named[1]), int(named[2] or 1)) if named else (2, 1)
            assert (seg.data.batch_size, frames) == (batch, times * so_frames), (name, arm)
