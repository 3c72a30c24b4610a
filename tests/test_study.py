"""The whole study end to end on a tiny preset: arms, stages, skipping, resume, metrics, report."""
import json
import re
import shutil

import pytest
import yaml

from i2iuda.config import load_config, to_dict
from i2iuda.study import Study, StudyConfig, report, run_study
from i2iuda.study.plan import needs, stage_config, stage_hash, stage_list, stage_name
from i2iuda.report import check_in_browser

TINY = [
    "data.synthetic.height=64", "data.synthetic.width=128", "data.synthetic.n_source=30",
    "data.synthetic.n_target_train=20", "data.synthetic.n_target_val=8", "data.synthetic.workers=1",
    "translate.settings.cyclegan={model: {ngf: 8, ndf: 8, n_blocks: 1}, data: {size: [32, 64], batch_size: 2, "
    "workers: 0}, epochs: 1, steps_per_epoch: 4, image_every: 4, checkpoint_every: 4, device: cpu}",
    "segment.model.backbone=tu-resnet10t", "segment.data.size=[32,64]", "segment.data.crop=[32,64]",
    "segment.data.batch_size=4", "segment.data.workers=0", "segment.device=cpu",
    "segment.epochs=2", "segment.steps_per_epoch=3", "eval.pictures=2", "workers=0",
]


def tiny(tmp_path, *more):
    return load_config(StudyConfig, None, TINY + [f"data.synthetic_root={tmp_path / 'bench'}", *more])


def resolved(cfg, run="run") -> Study:
    return Study.resolve(cfg, run)


def arms(cfg) -> list:
    return list(resolved(cfg).arms.values())


def hashes(cfg) -> dict[str, str]:
    """Every stage's config hash, by stage name, in study order."""
    study = resolved(cfg)
    return {stage_name(k, a): stage_hash(stage_config(study, k, a)) for k, a in stage_list(study)}


def test_arms_as_data(tmp_path):
    cfg = tiny(tmp_path, "translate.methods={cyclegan: {}, fda_b005: {method: fda, beta: 0.05}, short: {epochs: 3,"
                         " method: cyclegan}}")
    a = {x.name: x for x in arms(cfg)}
    assert list(a) == ["source_only", "cyclegan", "fda_b005", "short", "oracle"]
    assert to_dict(a["fda_b005"].translate.model) == {"beta": 0.05} and a["fda_b005"].on_the_fly
    assert a["short"].translate.epochs == 3 and a["short"].translate.model.ngf == 8  # preset settings kept
    assert a["cyclegan"].translate.seed == cfg.seed and not a["cyclegan"].on_the_fly
    listed = [x.name for x in arms(tiny(tmp_path, "translate.methods=[cyclegan, fda]", "oracle=false"))]
    assert listed == ["source_only", "cyclegan", "fda"]
    from i2iuda.errors import UserError
    with pytest.raises(UserError, match="method 'cyclegun': expected one of"):
        arms(tiny(tmp_path, "translate.methods=[cyclegun]"))
    fast = {x.name: x for x in arms(tiny(tmp_path, "translate.methods={cut: {}, fastcut: {method: cut, mode: fastcut}}"))}
    assert fast["cut"].translate.model.lambda_nce == 1.0 and fast["cut"].translate.model.nce_idt is True
    assert fast["fastcut"].translate.model.lambda_nce == 10.0 and fast["fastcut"].translate.model.flip_equivariance
    with pytest.raises(UserError, match="translate.methods.oracle: a new arm name"):
        arms(tiny(tmp_path, "translate.methods=[oracle]"))


def test_cycada_arm_trains_its_translator_after_source_only(tmp_path):
    plain = tiny(tmp_path, "translate.methods={cyclegan: {}}")
    sem = tiny(tmp_path, "translate.methods={cyclegan: {}, cyclegan_sem: {method: cyclegan, semantic: 1.0}}")
    order = list(hashes(sem))
    assert order[:4] == ["data", "segment:source_only", "translate:cyclegan", "apply:cyclegan"]
    assert order.count("segment:source_only") == 1
    assert list(hashes(plain))[:2] == ["data", "translate:cyclegan"]  # no CyCADA arm: order unchanged
    a = {x.name: x for x in arms(sem)}
    assert a["cyclegan_sem"].judged_by_the_study and not a["cyclegan"].judged_by_the_study
    # f is the study's source-only model: changing the segmenter invalidates the CyCADA translator only
    other = tiny(tmp_path, "translate.methods={cyclegan: {}, cyclegan_sem: {method: cyclegan, semantic: 1.0}}",
                 "segment.lr=0.001")
    for name, changed in (("cyclegan", False), ("cyclegan_sem", True)):
        assert (hashes(sem)[f"translate:{name}"] != hashes(other)[f"translate:{name}"]) == changed, name


def test_settings_added_later_keep_finished_stages_valid(tmp_path):
    """encoder_depth, decoder_channels and lanes came after studies were run: at their defaults
    they leave every stage hash as it was (as if absent); set otherwise, the segment stage's moves."""
    import copy

    cfg = tiny(tmp_path)
    study = resolved(cfg)
    for kind, arm in stage_list(study):
        now = stage_config(study, kind, arm)
        old = copy.deepcopy(now)
        for d in (old.get("segment", {}).get("model", {}), old.get("all", {}).get("segment", {}).get("model", {})):
            d.pop("encoder_depth", None), d.pop("decoder_channels", None)
        old.get("all", {}).pop("lanes", None)
        assert stage_hash(now) == stage_hash(old), kind
    for change in ("segment.model.encoder_depth=4", "segment.model.decoder_channels=128"):
        assert hashes(tiny(tmp_path, change))["segment:source_only"] != hashes(cfg)["segment:source_only"], change
    # how the stages are scheduled is not a stage's config
    assert hashes(tiny(tmp_path, "lanes=2"))["segment:source_only"] == hashes(cfg)["segment:source_only"]


# Stage hashes written by the study before it was split into the study/ package (commit bc91b29,
# i2iuda/experiment.py), for the config of test_a_study_from_before_the_split_is_skipped; the
# benchmark was then the hard variant (source_gap 2).
BEFORE_THE_SPLIT = {
    "data": "dbe8e57f9459b78e",
    "segment:source_only": "28cfb70555458bc2",
    "translate:cyclegan": "85fc5473051d6d75",
    "apply:cyclegan": "85fc5473051d6d75",
    "translate:cyclegan_sem": "ba02f7aac8019399",
    "apply:cyclegan_sem": "ba02f7aac8019399",
    "translate:cut": "52a071be48c44c9f",
    "apply:cut": "52a071be48c44c9f",
    "translate:fda_b005": "e8a2696bad82b745",
    "apply:fda_b005": "e8a2696bad82b745",
    "segment:cyclegan": "68094ab3cc1de9e7",
    "segment:cyclegan_sem": "302385ef55a6f914",
    "segment:cut": "8b972411e221a171",
    "segment:fda_b005": "9cb83915167e0fbe",
    "segment:oracle": "04b21abb23fa9bf8",
    "pseudo:st_r1": "5d078fbd58021a2b",
    "segment:st_r1": "8f6775996dfcb7c4",
    "pseudo:st_r2": "c0dc49eeab9a12f8",
    "segment:st_r2": "9257a768dd5fbe1a",
    "evaluate:source_only": "1447ffb128384566",
    "evaluate:cyclegan": "0c4965a35249ab04",
    "evaluate:cyclegan_sem": "3ace6be4d27a7bd4",
    "evaluate:cut": "4635708977891ebc",
    "evaluate:fda_b005": "71903e1f5cf79032",
    "evaluate:st_r1": "a9ad3937d4fbb57c",
    "evaluate:st_r2": "0424b3344a255f3b",
    "evaluate:oracle": "823dca24d9c09abc",
    "report": "24d23c55d914d659",
}


def test_a_study_from_before_the_split_is_skipped_stage_by_stage(tmp_path):
    """Every stage kind (data, translate, apply, segment with CyCADA's f, FDA and self-training,
    pseudo, evaluate with KID/FID, report) hashes as it did before the split, so a finished study
    is skipped stage by stage (skipping on equal hashes: test_study_end_to_end)."""
    cfg = load_config(StudyConfig, None, TINY + [
        "translate.methods={cyclegan: {}, cyclegan_sem: {method: cyclegan, semantic: 1.0}, cut: {}, "
        "fda_b005: {method: fda, beta: 0.05}}", "self_train={st: {teachers: [cyclegan, fda_b005], rounds: 2}}",
        "eval.kid_fid=8", "data.synthetic_root=/pinned/bench", "data.synthetic.source_gap=2"])
    assert before_the_look_stage(hashes(cfg), cfg) == BEFORE_THE_SPLIT


def before_the_look_stage(now: dict[str, str], cfg) -> dict[str, str]:
    """The stages a study had before the look stage took over the evaluate stage's scores of the
    frames an arm trains on: the look stages are the only new ones, one for source-only and each
    translation arm, each just before the arm's evaluate stage (study order)."""
    study = resolved(cfg)
    looked = [a for a in study.arms.values() if a.KIND in ("source_only", "translation")]
    names = list(now)
    assert {k for k in now if k.startswith("look:")} == {f"look:{a.name}" for a in looked}
    assert all(names.index(f"look:{a.name}") < names.index(f"evaluate:{a.name}") for a in looked)
    return {k: v for k, v in now.items() if not k.startswith("look:")}


# Stage hashes, in study order, written by the study before it was rebuilt around its arm kinds
# (commit 53a3402, study/arms.py and plan.py), for every kind of arm: translation (CyCADA, CUT, FDA),
# offline self-training (MBT teachers), online self-training (raw, CycleGAN and FDA source; MIC;
# a schedule of its own), with KID/FID, on today's default benchmark.
BEFORE_THE_ARMS = {
    "data": "e07c2e8712c0f68c",
    "segment:source_only": "28cfb70555458bc2",
    "translate:cyclegan": "85fc5473051d6d75",
    "apply:cyclegan": "85fc5473051d6d75",
    "translate:cyclegan_sem": "ba02f7aac8019399",
    "apply:cyclegan_sem": "ba02f7aac8019399",
    "translate:cut": "52a071be48c44c9f",
    "apply:cut": "52a071be48c44c9f",
    "translate:fda_b005": "e8a2696bad82b745",
    "apply:fda_b005": "e8a2696bad82b745",
    "segment:cyclegan": "68094ab3cc1de9e7",
    "segment:cyclegan_sem": "302385ef55a6f914",
    "segment:cut": "8b972411e221a171",
    "segment:fda_b005": "9cb83915167e0fbe",
    "segment:oracle": "04b21abb23fa9bf8",
    "pseudo:st_r1": "5d078fbd58021a2b",
    "segment:st_r1": "8f6775996dfcb7c4",
    "pseudo:st_r2": "c0dc49eeab9a12f8",
    "segment:st_r2": "9257a768dd5fbe1a",
    "segment:dacs": "5503a2f0024a44d4",
    "segment:cg_mic": "fd08d306a97a38fb",
    "segment:fda_dacs": "6ef0de1d7cb7df72",
    "evaluate:source_only": "1447ffb128384566",
    "evaluate:cyclegan": "0c4965a35249ab04",
    "evaluate:cyclegan_sem": "3ace6be4d27a7bd4",
    "evaluate:cut": "4635708977891ebc",
    "evaluate:fda_b005": "71903e1f5cf79032",
    "evaluate:st_r1": "a9ad3937d4fbb57c",
    "evaluate:st_r2": "0424b3344a255f3b",
    "evaluate:dacs": "6405094eed95019c",
    "evaluate:cg_mic": "8b63bc12994aaad3",
    "evaluate:fda_dacs": "044b88696568934f",
    "evaluate:oracle": "823dca24d9c09abc",
    "report": "4421b3ddc0711861",
}


def test_a_study_from_before_the_arm_kinds_is_skipped_stage_by_stage(tmp_path):
    """The study rebuilt around arm kinds lists the same stages in the same order with the same
    hashes as before, so finished studies are skipped (the online arms' rcs_min_pixels default moved
    to DAFormer's count: hashed as before while RCS is off), but for the online arms, whose training
    changed on purpose since."""
    cfg = load_config(StudyConfig, None, TINY + [
        "translate.methods={cyclegan: {}, cyclegan_sem: {method: cyclegan, semantic: 1.0}, cut: {}, "
        "fda_b005: {method: fda, beta: 0.05}}", "self_train={st: {teachers: [cyclegan, fda_b005], rounds: 2}}",
        "online={dacs: {source: source_only}, cg_mic: {source: cyclegan, mic: true, alpha: 0.999}, "
        "fda_dacs: {source: fda_b005, steps: 5}}", "eval.kid_fid=8", "data.synthetic_root=/pinned/bench"])
    now = before_the_look_stage(hashes(cfg), cfg)
    assert list(now) == list(BEFORE_THE_ARMS)
    online = {f"{k}:{a}" for k in ("segment", "evaluate") for a in ("dacs", "cg_mic", "fda_dacs")}
    assert {k: v for k, v in now.items() if k not in online} == {k: v for k, v in BEFORE_THE_ARMS.items() if k not in online}
    # the online arms alone are trained again since their teacher lost its dropout (and the warm-up
    # became mmcv's); their other settings added since (feature distance, a segment of their own)
    # are left out while off
    assert all(now[k] != BEFORE_THE_ARMS[k] for k in online)
    rcs = hashes(tiny(tmp_path, "online={dacs: {source: source_only, rare_class_sampling: true}}"))
    old_count = hashes(tiny(tmp_path, f"online={{dacs: {{source: source_only, rare_class_sampling: true, "
                                      f"rcs_min_pixels: {3000 / (1280 * 720)}}}}}"))
    assert rcs["segment:dacs"] != old_count["segment:dacs"]  # with RCS on, the threshold is part of the arm


def test_study_end_to_end(tmp_path):
    cfg = tiny(tmp_path, "seed=1")
    run = tmp_path / "run"
    # interrupted between stages: stop after source-only, then run again
    run_study(cfg, run, stop_after="segment:source_only", progress=False)
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["data", "translate:cyclegan", "apply:cyclegan", "segment:source_only"]
    assert not (run / "metrics.json").exists()
    # the study's seed is the one every stage used and the saved configs say so
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == saved["segment"]["seed"] == 1
    assert yaml.safe_load((run / "translate" / "cyclegan" / "config.yaml").read_text())["seed"] == 1
    metrics = run_study(cfg, run, progress=False)
    stages2 = json.loads((run / "stages.json").read_text())
    assert list(stages2) == ["data", "translate:cyclegan", "apply:cyclegan", "segment:source_only",
                             "segment:cyclegan", "segment:oracle", "look:source_only", "evaluate:source_only",
                             "look:cyclegan", "evaluate:cyclegan", "evaluate:oracle", "report"]
    for s in stages:
        assert stages2[s] == stages[s]  # not redone
    # metrics.json: the documented schema, one row per arm
    m = json.loads((run / "metrics.json").read_text())
    assert metrics == m  # what run_study returns is what it wrote
    assert m["schema"] == "i2iuda.study.metrics/3"
    assert list(m["arms"]) == ["source_only", "cyclegan", "oracle"] and set(m["ranking"]) == {"source_only", "cyclegan"}
    for name, v in m["arms"].items():
        assert {"kind", "PA", "MPA", "mIoU", "FWIoU", "per_class_IoU", "delta_mIoU", "gap_closed"} <= set(v)
        assert len(v["per_class_IoU"]) == 19
        assert v["delta_mIoU"] == pytest.approx(v["mIoU"] - m["arms"]["source_only"]["mIoU"])
    # the two ends of the gap say so, and only the adapted arm closes any of it
    assert [(v["bound"], v["gap_closed"] is None) for v in m["arms"].values()] == [("lower", True), (None, False),
                                                                                   ("upper", True)]
    # the FCN-score: the oracle on raw (source-only) and translated source val, against source labels
    fcn = {a: m["arms"][a]["translation"]["fcn_score_mIoU"] for a in ("source_only", "cyclegan")}
    assert all(0 <= v <= 100 for v in fcn.values()) and "translation" not in m["arms"]["oracle"]
    scored = json.loads((run / "look" / "cyclegan" / "translation.json").read_text())
    assert "translated/cyclegan" in scored["frames"] and scored["kid_fid"] is None  # KID/FID off by default
    assert "FCN-score" in (run / "report.md").read_text()
    # a finished stage whose folder was deleted is redone, and only that one (the others' outputs
    # keep their modification times); the report is redone after it, to the same numbers
    others = [run / "eval" / "cyclegan" / "metrics.json", run / "eval" / "oracle" / "metrics.json",
              run / "segment" / "source_only" / "summary.json"]
    mtimes = [p.stat().st_mtime_ns for p in others]
    shutil.rmtree(run / "eval" / "source_only")
    run_study(cfg, run, progress=False)
    assert (run / "eval" / "source_only" / "metrics.json").is_file()
    assert [p.stat().st_mtime_ns for p in others] == mtimes
    assert json.loads((run / "metrics.json").read_text())["arms"] == m["arms"]
    # the report: self-contained, every image inlined and decodable
    page = (run / "report.html").read_text()
    imgs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(imgs) >= 5 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "Gap closed" in page and "<table>" in page and (run / "report.md").exists()
    if shutil.which("chromium"):  # checked as a person would see it (Debian's chromium)
        assert check_in_browser(run / "report.html") == (len(imgs), len(imgs))
    # the report reads files only: it rebuilds the same page with every checkpoint gone
    for ckpt in [*run.rglob("*.pt"), *run.rglob("*.safetensors")]:
        ckpt.unlink()
    report(run)
    assert (run / "report.html").read_text() == page
    # a re-run skips every stage; --from redoes a stage and what follows
    before = (run / "metrics.json").stat().st_mtime_ns
    run_study(cfg, run, progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns == before
    run_study(cfg, run, from_stage="report", progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns != before
    assert json.loads((run / "stages.json").read_text())["segment:oracle"] == stages2["segment:oracle"]


SMALL = "translate.settings.cyclegan={data: {size: [16, 32]}, model: {d_layers: 1}}"  # smaller than the segmenter


@pytest.fixture(scope="module")
def base_study(tmp_path_factory):
    """A finished tiny study without the oracle (source-only and CycleGAN) that tests add arms to
    (each test's assertions hold whichever other test added its arms first)."""
    tmp = tmp_path_factory.mktemp("base")
    run_study(tiny(tmp, "oracle=false", SMALL, "eval.kid_fid=4"), tmp / "run", progress=False)
    return tmp


def test_adding_an_arm_runs_only_that_arm(base_study):
    from PIL import Image

    tmp_path, small = base_study, SMALL
    run = tmp_path / "run"
    # translated at the size the segmenter consumes (32x64), not the translator's training size
    assert {Image.open(p).size for p in (run / "translated" / "cyclegan").rglob("images/*.png")} == {(64, 32)}
    before = json.loads((run / "stages.json").read_text())
    cut = ("translate.settings.cut={model: {ngf: 8, ndf: 8, n_blocks: 1, d_layers: 1}, data: {size: [32, 64], "
           "batch_size: 2, workers: 0}, epochs: 1, steps_per_epoch: 3, checkpoint_every: 3, device: cpu}")
    cfg = tiny(tmp_path, "oracle=false", small, cut, "eval.kid_fid=4",
               "translate.methods={cyclegan: {}, fda_b005: {method: fda, beta: 0.05}, fastcut: {method: cut, mode: fastcut},"
               " sem: {method: cyclegan, semantic: 1.0, semantic_targets: labels}}")
    m = run_study(cfg, run, progress=False)
    after = json.loads((run / "stages.json").read_text())
    redone = {k for k in after if before.get(k) != after[k]}
    new = ("fda_b005", "fastcut", "sem")
    assert redone == {f"{k}:{a}" for k in ("translate", "apply", "segment", "look", "evaluate") for a in new} | {"report"}
    assert list(m["arms"]) == ["source_only", "cyclegan", "fda_b005", "fastcut", "sem"]
    # CyCADA's f is the study's source-only segmenter, and the loss was trained on
    sem_cfg = yaml.safe_load((run / "translate" / "sem" / "config.yaml").read_text())
    assert sem_cfg["model"]["semantic_model"] == str(run.resolve() / "segment" / "source_only")
    logged = (run / "translate" / "sem" / "losses.jsonl").read_text()
    assert '"loss/sem_s"' in logged and '"loss/sem_t"' in logged
    assert "CyCADA semantic loss x1 (source labels)" in (run / "report.md").read_text()
    # the cast's floor: the target's own val frames against its train frames, in the rows and the report
    from i2iuda import appearance
    from i2iuda.study.diagnostics import frames_of

    target = json.loads((run / "appearance_target.json").read_text())
    floor = appearance.colour_shift(appearance.colour(frames_of(m["target_val"])), target["colour"])["cast"]
    assert target["val_cast"] == pytest.approx(floor) and 0 < floor < 5
    assert m["arms"]["cyclegan"]["translation"]["target_val_cast"] == pytest.approx(floor)
    assert f"the target's own val frames: a cast of {floor:.2f}" in (run / "report.md").read_text()
    # the visibility line travels in the rows: the report, which may not import appearance, prints it
    assert m["arms"]["cyclegan"]["translation"]["cast_jnd"] == appearance.CAST_JND
    assert f"from about {appearance.CAST_JND:g}, one just-noticeable difference" in (run / "report.md").read_text()
    # the edges a translation kept of its source frames: in its rows and its section; none for the raw source
    kept = m["arms"]["cyclegan"]["translation"]["edges_kept"]
    assert 0 < kept < 1 and m["arms"]["source_only"]["translation"]["edges_kept"] is None
    assert f"edges kept {kept:.2f}" in (run / "report.md").read_text()
    # the class cast: the raw source's per-class colours (the synthetic source is its target's palette,
    # saturated and brightened) are further from the target val frames' than the target's own train frames'
    raw, translated = (m["arms"][a]["translation"]["class_cast"] for a in ("source_only", "cyclegan"))
    floor = target["train_class_cast"]
    assert 0 < floor < raw and translated > 0
    assert m["arms"]["cyclegan"]["translation"]["target_train_class_cast"] == pytest.approx(floor)
    assert f"**class cast** {translated:.2f}" in (run / "report.md").read_text()
    # KID/FID of every arm's frames (raw source for source-only), the target embedded once
    from i2iuda.fid import load_inception
    if load_inception() is not None:
        for name in m["arms"]:
            t = m["arms"][name]["translation"]
            assert t["KID"] is not None and t["FID"] > 0 and t["N"][1] == 4 and 0 < t["N"][0] <= 4, name
            assert t["fcn_score_mIoU"] is None  # no oracle, no FCN-score
        assert len(list((run / "fid_cache").glob("*.safetensors"))) == 1 + len(m["arms"])
        assert "## Translation quality" in (run / "report.md").read_text()
    assert m["arms"]["cyclegan"]["gap_closed"] is None
    assert (run / "translate" / "fastcut" / "checkpoints" / "translator.safetensors").is_file()
    assert "FastCUT ngf=8" in (run / "report.md").read_text()
    # FDA trains nothing (no checkpoint), translates only source val offline, and its segmenter
    # trained on raw source with FDA on the fly, selected on the FDA-translated source val
    assert not (run / "translate" / "fda_b005" / "checkpoints").exists()
    fda_run = yaml.safe_load((run / "translate" / "fda_b005" / "config.yaml").read_text())
    assert fda_run["model"] == {"beta": 0.05} and "epochs" not in fda_run  # only what it uses
    seg = yaml.safe_load((run / "segment" / "fda_b005" / "config.yaml").read_text())
    assert seg["fda_beta"] == 0.05 and seg["fda_target"].endswith(":target-train")
    assert seg["train"].endswith(":source-train") and "translated/fda_b005" in seg["val"]
    assert (run / "translated" / "fda_b005" / "images").is_dir()
    assert "b = 1 at 32x64" in (run / "report.md").read_text()  # the band FDA swaps, printed


def test_changed_config_does_not_resume_a_foreign_checkpoint(tmp_path):
    from i2iuda.errors import UserError

    run = tmp_path / "run"
    run_study(tiny(tmp_path), run, stop_after="translate", progress=False)
    done = (run / "stages.json").read_text()
    (run / "stages.json").write_text("{}")  # as if killed before the stage was recorded done
    changed = tiny(tmp_path, "translate.settings.cyclegan.model.ngf=4")
    with pytest.raises(UserError, match="stage translate:cyclegan: .* another config; use --from translate:cyclegan"):
        run_study(changed, run, progress=False)
    run_study(changed, run, from_stage="translate:cyclegan", stop_after="translate", progress=False)
    # recorded done, then the settings changed: redone from scratch, no --from needed
    (run / "stages.json").write_text(done)
    wider = tiny(tmp_path, "translate.settings.cyclegan.model.ngf=12")
    run_study(wider, run, stop_after="translate", progress=False)
    assert yaml.safe_load((run / "translate" / "cyclegan" / "config.yaml").read_text())["model"]["ngf"] == 12
    assert json.loads((run / "stages.json").read_text())["translate:cyclegan"]["hash"] != json.loads(done)["translate:cyclegan"]["hash"]


def test_a_study_on_other_data_is_refused_unless_asked(tmp_path):
    """Other data (or the same at another path) changes every stage's hash: the study would
    delete and redo every finished stage. It stops instead, naming what changed."""
    from i2iuda.errors import UserError

    run = tmp_path / "run"
    run_study(tiny(tmp_path), run, stop_after="data", progress=False)
    before = [(run / n).read_text() for n in ("stages.json", "config.yaml")]
    moved = tiny(tmp_path, f"data.synthetic_root={tmp_path / 'elsewhere'}")
    with pytest.raises(UserError, match=r"data settings changed since its stages ran \(data.synthetic_root: "
                                         r".*bench -> .*elsewhere\).*--from data"):
        run_study(moved, run, progress=False)
    assert [(run / n).read_text() for n in ("stages.json", "config.yaml")] == before  # nothing touched
    run_study(moved, run, from_stage="data", stop_after="data", progress=False)  # asked for: done
    assert "elsewhere" in (run / "config.yaml").read_text()


def test_bad_stage_name_is_a_clear_error(tmp_path):
    from i2iuda.errors import UserError

    with pytest.raises(UserError, match="--from 'nope': expected a stage .*segment:source_only.* or a kind"):
        run_study(StudyConfig(), tmp_path, from_stage="nope", progress=False)


def _metrics(**miou):
    """A study's metrics.json with the given arms' mIoU (the other metrics derived from it)."""
    base, top = miou["source_only"], miou.get("oracle")
    bound = {"source_only": "lower", "oracle": "upper"}
    return {"schema": "i2iuda.study.metrics/3", "target_val": "t", "classes": "19", "ranking": [],
            "arms": {a: {"kind": {"source_only": "source_only", "oracle": "oracle"}.get(a, "translation"),
                         "bound": bound.get(a), "method": None,
                         "PA": 2 * v, "MPA": v, "mIoU": v, "FWIoU": v, "delta_mIoU": v - base,
                         "gap_closed": (v - base) / (top - base) if top and a not in bound else None,
                         "per_class_IoU": {"road": v, "pole": None}} for a, v in miou.items()}}


def test_metrics_of_the_older_schema_read_as_the_current_one():
    """metrics/2 rows had no bound and a gap closed for source-only (0) and the oracle (1): read
    today, they are the two ends of the gap, unranked at the top and without a gap closed."""
    from i2iuda.report import upgraded
    from i2iuda.study import results_table

    old = _metrics(source_only=10, cyclegan=20, oracle=30)
    old["schema"] = "i2iuda.study.metrics/2"
    for name, row in old["arms"].items():
        del row["bound"]
        row["gap_closed"] = (row["mIoU"] - 10) / 20
    new = upgraded(old)
    assert [(r["bound"], r["gap_closed"]) for r in new["arms"].values()] == [("lower", None), (None, 0.5), ("upper", None)]
    table = results_table(old).splitlines()
    assert table[1].split()[-1] == "10.00"  # source-only: no gap closed
    assert table[2].endswith("50.0%") and table[3].startswith("oracle (upper bound)")


def test_seed_aggregate_is_mean_sample_std_and_paired_differences():
    from i2iuda.study.seeds import aggregate, parse_seeds, seeds_table

    agg = aggregate({0: _metrics(source_only=10, cyclegan=20, fda=11, oracle=30),
                     1: _metrics(source_only=12, cyclegan=19, fda=14, oracle=31),
                     2: _metrics(source_only=8, cyclegan=24, fda=7, oracle=29)})
    assert agg["schema"] == "i2iuda.study.aggregate/1" and agg["seeds"] == [0, 1, 2]
    cg = agg["arms"]["cyclegan"]["mIoU"]
    assert cg["mean"] == pytest.approx(21.0) and cg["std"] == pytest.approx(2.6457513, rel=1e-6)  # ddof 1
    assert (cg["min"], cg["max"], cg["values"]) == (19, 24, [20, 19, 24])
    assert agg["arms"]["oracle"]["mIoU"]["std"] == pytest.approx(1.0)
    assert agg["arms"]["fda"]["per_class_IoU"]["pole"] is None  # n/a on every seed
    assert agg["ranking"] == ["cyclegan", "fda", "source_only"]  # by mean, oracle apart
    pairs = {(p["a"], p["b"]): p for p in agg["paired_mIoU"]}
    assert set(pairs) == {("cyclegan", "fda"), ("cyclegan", "source_only"), ("fda", "source_only")}
    fs = pairs[("fda", "source_only")]  # +1, +2, -1: better on 2 of 3 seeds
    assert fs["values"] == [1, 2, -1] and fs["mean"] == pytest.approx(2 / 3) and fs["a_better"] == 2
    # paired std is the std of the differences, not a combination of the arms' stds
    assert fs["std"] == pytest.approx(1.5275252, rel=1e-6)
    # 95% CI of the mean difference: t(0.975, 2) = 4.303 times std / sqrt(3); it holds 0 here
    assert fs["ci95"] == pytest.approx([2 / 3 - 3.79486, 2 / 3 + 3.79486], abs=1e-4)
    from i2iuda.study.seeds import ci95
    assert ci95([5.0]) is None and ci95([1.0, 3.0]) == pytest.approx([2 - 12.706, 2 + 12.706], abs=1e-3)
    assert "cyclegan - source_only: +11.00" in seeds_table(agg)
    assert parse_seeds("0-2") == [0, 1, 2] and parse_seeds("3,1") == [3, 1]
    from i2iuda.errors import UserError
    for bad in ("a,b", "1,1", ""):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)


def test_two_seed_study_aggregates_and_reports(tmp_path):
    from i2iuda.study.seeds import run_seeds

    cfg = tiny(tmp_path, "oracle=false")
    m = run_seeds(cfg, tmp_path / "seeds", [0, 1], progress=False)
    per = [json.loads((tmp_path / "seeds" / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [yaml.safe_load((tmp_path / "seeds" / f"seed_{s}" / "config.yaml").read_text())["seed"] for s in (0, 1)] == [0, 1]
    assert m["arms"]["cyclegan"]["mIoU"]["values"] == [p["arms"]["cyclegan"]["mIoU"] for p in per]
    assert json.loads((tmp_path / "seeds" / "metrics.json").read_text()) == m
    page = (tmp_path / "seeds" / "report.html").read_text()
    assert "Paired differences" in page and 'href="seed_1/report.html"' in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
    # done seeds are skipped: a second call redoes nothing
    before = (tmp_path / "seeds" / "seed_0" / "stages.json").read_text()
    run_seeds(cfg, tmp_path / "seeds", [0, 1], progress=False)
    assert (tmp_path / "seeds" / "seed_0" / "stages.json").read_text() == before


def test_self_training_arms_pseudo_label_with_the_previous_round(base_study):
    from i2iuda.errors import UserError

    tmp_path = base_study
    run = tmp_path / "run"
    cfg = tiny(tmp_path, "oracle=false", SMALL, "eval.kid_fid=4",
               "self_train={st: {teachers: [cyclegan], rounds: 2, percentile: 66}}")
    order = list(hashes(cfg))
    assert order[order.index("segment:cyclegan") + 1:order.index("look:source_only")] == [
        "pseudo:st_r1", "segment:st_r1", "pseudo:st_r2", "segment:st_r2"]
    before = json.loads((run / "stages.json").read_text())
    m = run_study(cfg, run, progress=False)
    after = json.loads((run / "stages.json").read_text())
    assert {k for k in after if before.get(k) != after[k]} == {
        f"{k}:st_r{r}" for k in ("pseudo", "segment", "evaluate") for r in (1, 2)} | {"report"}
    assert list(m["arms"]) == ["source_only", "cyclegan", "st_r1", "st_r2"]
    # round 1 pseudo-labels with the adapted arm, round 2 with round 1; both train on cyclegan's
    # translated source plus their pseudo-labels, selected on its translated source val
    teachers = [json.loads((run / "pseudo" / f"st_r{r}" / "predictions" / "about.json").read_text())["runs"]
                for r in (1, 2)]
    assert teachers == [[str(run.resolve() / "segment" / "cyclegan")], [str(run.resolve() / "segment" / "st_r1")]]
    seg = yaml.safe_load((run / "segment" / "st_r2" / "config.yaml").read_text())
    assert "translated/cyclegan" in seg["train"] and "translated/cyclegan" in seg["val"]
    assert seg["mix"] == f"pseudo:{run.resolve() / 'pseudo' / 'st_r2'}" and seg["init_from"] == ""
    about = json.loads((run / "pseudo" / "st_r1" / "about.json").read_text())
    assert about["percentile"] == 66 and all(t <= 0.9 for t in about["thresholds"])
    # the synthetic target train has labels: the diagnostic and the pictures are in the report
    pl = m["arms"]["st_r1"]["pseudo_labels"]
    assert 0 < pl["kept_fraction"] < 1 and 0 <= pl["precision"] <= 100
    report = (run / "report.md").read_text()
    assert "## Arm st_r2" in report and "Pseudo-label quality" in report and "pseudo_labels.png" in report
    with pytest.raises(UserError, match="self_train.st.teachers: \\['nope'\\]"):
        arms(tiny(tmp_path, "self_train={st: {teachers: [nope]}}"))


def test_online_arms_train_on_their_source_arms_data_and_are_reported(tmp_path):
    from i2iuda.errors import UserError

    cfg = tiny(tmp_path, "online={dacs: {source: source_only}, cg_mic: {source: cyclegan, mic: true, alpha: 0.999}}",
               "oracle=false")
    study = resolved(cfg, tmp_path / "run")
    a = study.arms
    assert a["cg_mic"].KIND == "online" and a["cg_mic"].source is a["cyclegan"]
    seg = a["cg_mic"].segment_config()
    assert seg.train.endswith("translated/cyclegan:train") and seg.target.endswith(":target-train")
    assert seg.online.mic and seg.online.alpha == 0.999 and not seg.online.rare_class_sampling
    assert a["dacs"].segment_config().train.endswith(":source-train")
    assert needs(study, "segment", a["cg_mic"]) == {"data", "apply:cyclegan"}
    order = list(hashes(cfg))
    assert order.index("segment:cg_mic") > order.index("apply:cyclegan")
    with pytest.raises(UserError, match="online.x.source: 'fda': expected source_only or a translation arm"):
        arms(tiny(tmp_path, "online={x: {source: fda}}"))
    with pytest.raises(UserError, match=r"online.x.mic_ratio=1.0: out of range"):
        tiny(tmp_path, "online={x: {mic_ratio: 1.0}}")
    m = run_study(cfg, tmp_path / "run", progress=False)
    assert m["arms"]["cg_mic"]["kind"] == "online" and 0 <= m["arms"]["cg_mic"]["online"]["confidence_weight"] <= 1
    about = json.loads((tmp_path / "run" / "study.json").read_text())
    assert {r["name"]: r.get("mic") for r in about["arms"] if r["kind"] == "online"} == {"dacs": False, "cg_mic": True}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Arm cg_mic" in report and "MIC" in report and "figures/online_cg_mic.png" in report
    assert (tmp_path / "run" / "figures" / "online_cg_mic.png").is_file()


def test_damaged_bookkeeping_is_recomputed_from_the_stages_outputs(tmp_path, capsys):
    """A study whose stages.json, study.json, config.yaml or a stage's record is damaged does not
    skip over the damage: stages.json is rebuilt from the records each stage keeps in its folder (no
    training stage is redone), a stage whose record does not read is redone, and so is the report."""
    cfg = tiny(tmp_path, "oracle=false")
    run = tmp_path / "run"
    run_study(cfg, run, progress=False)
    trained = [run / "translate" / "cyclegan" / "summary.json", run / "segment" / "source_only" / "summary.json",
               run / "segment" / "cyclegan" / "summary.json"]
    mtimes = [p.stat().st_mtime_ns for p in trained]
    before = json.loads((run / "stages.json").read_text())
    (run / "stages.json").write_text('{"data": {"hash": ')  # cut short
    (run / "study.json").write_text("")
    (run / "config.yaml").write_text("seed: [1, \n")
    (run / "eval" / "cyclegan" / "metrics.json").write_text('{"PA": 1')
    capsys.readouterr()
    m = run_study(cfg, run, progress=False)
    err = capsys.readouterr().err
    assert "stages.json: not valid JSON" in err and "rebuilt from the records of" in err
    assert f"stage evaluate:cyclegan: {run / 'eval' / 'cyclegan' / 'metrics.json'} does not read: redone" in err
    assert [p.stat().st_mtime_ns for p in trained] == mtimes  # nothing retrained
    after = json.loads((run / "stages.json").read_text())
    assert {k: v["hash"] for k, v in after.items()} == {k: v["hash"] for k, v in before.items()}
    assert json.loads((run / "study.json").read_text())["arms"] and m["arms"]["cyclegan"]["mIoU"] >= 0
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == cfg.seed
