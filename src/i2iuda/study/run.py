"""Running a study (``i2iuda run``): every stage of the plan in order, or side by side in lanes;
a finished stage is skipped when its config hash is unchanged, redone when it changed (with the
stages after it that depend on it), an interrupted training stage resumes, ``--from STAGE``
redoes a stage (or the first of a kind) and everything after it."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from ..config import save_config, to_dict
from ..data.datasets import build_index
from ..data.synthetic import drawn_by, generate, written_with
from ..errors import UserError
from ..io import read_json, read_yaml, write_json
from ..progress import say
from ..runlock import holding, inherit
from .config import StudyConfig
from ..lanes import Job, run_in_lanes
from .plan import KINDS, Stages, damaged, needs, stage_config, stage_folder, stage_hash, stage_list, stage_name
from .results import collect_metrics, manifest, report
from .study import Study


def run_study(cfg: StudyConfig, run: str | Path, from_stage: str | None = None, stop_after: str | None = None,
              progress: bool = True) -> dict:
    """Run (or continue) the study in ``run``. Returns the metrics (RUN/metrics.json). The study is
    resolved and checked before its folder is touched: bad settings write nothing."""
    run = Path(run).resolve()  # absolute paths in the saved config: the report works from any folder
    if cfg.data.synthetic_root:
        cfg = replace(cfg, data=replace(cfg.data, synthetic_root=str(Path(cfg.data.synthetic_root).resolve())))
    # the study's seed is the one seed: the saved config.yaml shows it in the segment stage too
    cfg = replace(cfg, segment=replace(cfg.segment, seed=cfg.seed))
    if cfg.lanes > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"lanes={cfg.lanes} under torchrun: the ranks would each start their own lanes; "
                        f"set lanes=1 (a GPU gets nothing from lanes)")
    study = Study.resolve(cfg, run)
    todo = stage_list(study)
    names = [stage_name(k, a) for k, a in todo]
    for option, value in (("--from", from_stage), ("--stop-after", stop_after)):
        if value is not None and value not in names and value not in KINDS:
            raise UserError(f"{option} {value!r}: expected a stage ({', '.join(names)}) or a kind ({', '.join(KINDS)})")
    with holding(run):  # one study per folder; its stages write inside it under the same hold
        return _run_study(study, todo, names, from_stage, stop_after, progress)


def _run_study(study: Study, todo: list, names: list[str], from_stage: str | None, stop_after: str | None,
               progress: bool) -> dict:
    cfg, run = study.cfg, study.run
    run.mkdir(parents=True, exist_ok=True)
    folders = {stage_name(k, a): stage_folder(study, k, a) for k, a in todo if a is not None}
    stages = Stages.read(run, folders)
    if not from_stage and stages.recorded("data") and not stages.done("data", stage_hash(stage_config(study, "data", None))):
        # other data (or the same data at another path): every finished stage would be deleted and redone
        try:
            ran = (read_yaml(run / "config.yaml", None) or {}).get("data", {})
        except UserError:  # a damaged config.yaml: rewritten below; the hashes say what changed
            ran = {}
        now = to_dict(cfg.data)
        what = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in _differences(ran, now, "data").items())
        raise UserError(f"{run}: its data settings changed since its stages ran ({what or 'data'}); every finished "
                        f"stage would be redone and its outputs deleted: pass --from data for that, or use another --out")
    if not from_stage and cfg.data.synthetic_root and stages.recorded("data"):
        drawn = written_with(cfg.data.synthetic_root)
        if drawn is not None and drawn_by(drawn) != drawn_by(to_dict(cfg.data.synthetic)):
            what = ", ".join(f"{k} {v} -> {drawn.get(k)}" for k, v in drawn_by(to_dict(cfg.data.synthetic)).items()
                             if drawn.get(k) != v)
            raise UserError(f"{cfg.data.synthetic_root}: redrawn with other settings since {run} used it ({what}); "
                            f"give each benchmark its own data.synthetic_root, or pass --from data to redo the study")
    save_config(cfg, run / "config.yaml")
    if from_stage:
        first = next(i for i, n in enumerate(names) if n == from_stage or n.split(":")[0] == from_stage)
        stages.forget(names[first:])
        for kind, arm in todo[first:]:
            if (d := stage_folder(study, kind, arm)) is not None:
                shutil.rmtree(d, ignore_errors=True)
    last = max((i for i, n in enumerate(names) if stop_after in (n, n.split(":")[0])), default=len(names))
    jobs = []
    for (kind, arm), name in zip(todo[:last + 1], names[:last + 1]):
        h = stage_hash(stage_config(study, kind, arm))
        folder = stage_folder(study, kind, arm)
        done = stages.done(name, h) and (folder is None or folder.exists())  # a deleted folder is redone
        if kind == "report" and jobs:  # the report reads every stage: any stage run again redoes it
            done = False
        bad = damaged(study, kind, arm) if done else None
        if done and bad is None:
            say(f"stage {name}: done, skipped", "dim")
        else:
            if bad is not None:
                say(f"stage {name}: {bad} does not read: redone", "yellow")
            elif stages.recorded(name) and folder is not None and folder.exists():  # done, then the config changed
                say(f"stage {name}: its settings changed since it ran: redone", "yellow")
            if stages.recorded(name):
                if folder is not None and folder.exists():
                    shutil.rmtree(folder)
                stages.forget([name])
            todo_before = {j.name for j in jobs}  # a stage needs only earlier ones; done ones are done
            jobs.append(Job(name, needs(study, kind, arm) & todo_before, (study, kind, arm and arm.name),
                            in_lane=arm is not None, hash=h))
    if cfg.lanes > 1:
        run_in_lanes(jobs, cfg.lanes, _lane_stage, lambda *args: run_stage(*args, progress),
                     lambda job, seconds, peak: stages.mark(job.name, job.hash, seconds, peak, folders.get(job.name)))
    else:
        for job in jobs:
            say(f"stage {job.name}", "bold")
            t0 = time.perf_counter()
            run_stage(*job.args, progress)
            stages.mark(job.name, job.hash, time.perf_counter() - t0, folder=folders.get(job.name))
    return read_json(run / "metrics.json", {})


def run_stage(study: Study, kind: str, arm: str | None, progress: bool) -> None:
    """One stage: the study's own (data, report) or an arm's (by its name)."""
    if arm is not None:
        study.arms[arm].run(kind, progress)
    elif kind == "data":
        cfg = study.cfg
        if cfg.data.synthetic_root:
            generate(cfg.data.synthetic_root, cfg.data.synthetic, progress=progress)
        for key, spec in study.specs.items():
            index = build_index(spec)
            for p in index.problems:
                say(f"{key}: {p}", "yellow")
            if key != "target_train" and not index.labelled:
                raise UserError(f"data.{key} {spec}: has no labels")
    elif kind == "report":
        write_json(study.run / "metrics.json", collect_metrics(study))
        write_json(study.run / "study.json", manifest(study))
        report(study.run)


def _differences(a, b, where: str) -> dict:
    """{dotted key: (a's value, b's value)} where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = {}
        for k in dict.fromkeys([*a, *b]):
            out.update(_differences(a.get(k), b.get(k), f"{where}.{k}"))
        return out
    return {} if a == b else {where: (a, b)}


def _lane_stage(study: Study, kind: str, arm: str | None) -> None:
    """One stage in a lane process (lanes.py), inside the folder its parent study holds. No
    progress bar: two lanes would draw over each other; the training logs print rate and ETA."""
    inherit(study.run)
    run_stage(study, kind, arm, progress=False)
