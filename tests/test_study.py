"""The whole study end to end on a tiny preset: stages, skipping, resume, metrics, report."""
import json
import re
import shutil

import pytest
import yaml

from i2iuda.config import load_config
from i2iuda.experiment import STAGES, StudyConfig, run_study
from i2iuda.report import check_in_browser

TINY = [
    "data.synthetic.height=64", "data.synthetic.width=128", "data.synthetic.n_source=30",
    "data.synthetic.n_target_train=20", "data.synthetic.n_target_val=8", "data.synthetic.workers=1",
    "translate.model.ngf=8", "translate.model.ndf=8", "translate.model.n_blocks=1",
    "translate.data.size=[32,64]", "translate.data.batch_size=2", "translate.data.workers=0",
    "translate.epochs=1", "translate.steps_per_epoch=4", "translate.image_every=4", "translate.checkpoint_every=4",
    "segment.model.backbone=resnet18", "segment.data.size=[32,64]", "segment.data.crop=[32,64]",
    "segment.data.batch_size=4", "segment.data.workers=0",
    "segment.epochs=2", "segment.steps_per_epoch=3", "eval.pictures=2", "workers=0",
]


def test_study_end_to_end(tmp_path):
    cfg = load_config(StudyConfig, None, TINY + [f"data.synthetic_root={tmp_path / 'bench'}", "seed=1"])
    run = tmp_path / "run"
    # interrupted between stages: stop after source-only, then run again
    run_study(cfg, run, stop_after="source_only", progress=False)
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["data", "translate", "apply", "source_only"]
    assert not (run / "metrics.json").exists()
    # the study's seed is the one every stage used and the saved configs say so
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == saved["translate"]["seed"] == saved["segment"]["seed"] == 1
    assert yaml.safe_load((run / "translate" / "config.yaml").read_text())["seed"] == 1
    metrics = run_study(cfg, run, progress=False)
    stages2 = json.loads((run / "stages.json").read_text())
    assert list(stages2) == list(STAGES)
    for s in ("data", "translate", "apply", "source_only"):
        assert stages2[s] == stages[s]  # not redone
    # metrics.json: the documented schema
    m = json.loads((run / "metrics.json").read_text())
    assert metrics == m  # what run_study returns is what it wrote
    assert m["schema"] == "i2iuda.study.metrics/1"
    assert set(m["models"]) == {"source_only", "adapted", "oracle"}
    for v in m["models"].values():
        assert {"PA", "MPA", "mIoU", "FWIoU", "per_class_IoU"} <= set(v) and len(v["per_class_IoU"]) == 19
    assert m["gap_closed"] is None or isinstance(m["gap_closed"], float)
    # the report: self-contained, every image inlined and decodable
    page = (run / "report.html").read_text()
    imgs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(imgs) >= 4 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "Gap closed" in page or m["gap_closed"] is None
    assert (run / "report.md").exists()
    if shutil.which("chromium"):  # checked as a person would see it (Debian's chromium)
        assert check_in_browser(run / "report.html") == (len(imgs), len(imgs))
    # a re-run skips every stage; --from redoes a stage and what follows
    before = (run / "metrics.json").stat().st_mtime_ns
    run_study(cfg, run, progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns == before
    run_study(cfg, run, from_stage="evaluate", progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns != before
    assert json.loads((run / "stages.json").read_text())["oracle"] == stages2["oracle"]


def test_changed_config_does_not_resume_a_foreign_checkpoint(tmp_path):
    from i2iuda.errors import UserError

    cfg = load_config(StudyConfig, None, TINY + [f"data.synthetic_root={tmp_path / 'bench'}"])
    run = tmp_path / "run"
    run_study(cfg, run, stop_after="translate", progress=False)
    (run / "stages.json").write_text("{}")  # as if killed before the stage was recorded done
    changed = load_config(StudyConfig, None, TINY + [f"data.synthetic_root={tmp_path / 'bench'}",
                                                      "translate.model.ngf=4"])
    with pytest.raises(UserError, match="stage translate: .* another config; use --from translate"):
        run_study(changed, run, progress=False)
    run_study(changed, run, from_stage="translate", stop_after="translate", progress=False)


def test_bad_stage_name_is_a_clear_error(tmp_path):
    from i2iuda.errors import UserError

    with pytest.raises(UserError, match="--from 'nope': expected one of data, translate"):
        run_study(StudyConfig(), tmp_path, from_stage="nope", progress=False)
