"""Stages side by side (lanes.py): order, lanes, threads, failures; a tiny study in two lanes."""
import json
import os

import pytest

from i2iuda.errors import UserError
from i2iuda.lanes import Job, prestart, run_in_lanes, threads_per_lane


def record(folder: str, name: str, fail: bool = False) -> None:
    """A lane's job: write which process ran it with how many threads (and what it saw done)."""
    import torch

    if fail:
        raise UserError(f"{name}: a bad option")
    seen = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump({"pid": os.getpid(), "threads": torch.get_num_threads(), "seen": seen}, f)


def test_lanes_respect_needs_and_share_the_cores(tmp_path):
    done, here = [], []
    jobs = [Job("a", set(), (str(tmp_path), "a")), Job("b", set(), (str(tmp_path), "b")),
            Job("c", {"a"}, (str(tmp_path), "c")), Job("d", {"b", "c"}, (str(tmp_path), "d")),
            Job("report", {"a", "b", "c", "d"}, ("report",), in_lane=False)]
    peaks = {}
    run_in_lanes(jobs, 2, record, lambda *args: here.append(args),
                 lambda job, s, peak: (done.append(job.name), peaks.update({job.name: peak})))
    ran = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abcd"}
    assert "a" in ran["c"]["seen"] and {"b", "c"} <= set(ran["d"]["seen"])  # needs were done first
    assert len({r["pid"] for r in ran.values()}) == 2 and os.getpid() not in {r["pid"] for r in ran.values()}
    assert {r["threads"] for r in ran.values()} == {threads_per_lane(2)}
    assert here == [("report",)] and done[-1] == "report" and sorted(done) == ["a", "b", "c", "d", "report"]
    assert peaks["report"] is None and all(100 < peaks[n] < 4000 for n in "abcd")  # a lane's MB (torch imported)


def test_lanes_started_ahead_run_the_stages_with_the_study_s_threads_and_none_is_left(tmp_path):
    """prestart (i2iuda run, before it imports the study): the lanes it started run the stages, with
    the thread count of the study's lanes, not of the guess; a lane it started beyond them ends."""
    from i2iuda import lanes

    prestart(3, warm=("i2iuda.study.run",))  # one more than the study below uses
    ahead = [process for process, _ in lanes._AHEAD]
    jobs = [Job(n, set(), (str(tmp_path), n)) for n in "abc"]
    run_in_lanes(jobs, 2, record, print, lambda job, s, peak: None)
    ran = [json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc"]
    assert {r["pid"] for r in ran} <= {p.pid for p in ahead} and len({r["pid"] for r in ran}) == 2
    assert {r["threads"] for r in ran} == {threads_per_lane(2)}
    for process in ahead:
        process.join(timeout=10)
    assert not any(p.is_alive() for p in ahead) and lanes._AHEAD == []


def test_a_run_that_stops_at_a_bad_setting_ends_the_lanes_it_started(tmp_path, monkeypatch):
    import multiprocessing as mp

    from i2iuda import lanes
    from i2iuda.cli import app

    from typer.testing import CliRunner

    before = set(mp.active_children())
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "run"), "lanes=2", "segment.epochs=0"])
    assert isinstance(result.exception, UserError) and "segment.epochs=0" in str(result.exception)
    assert lanes._AHEAD == [] and set(mp.active_children()) <= before  # none left waiting for a study


def test_the_lanes_to_start_ahead_are_read_from_the_preset_and_its_overrides(tmp_path, monkeypatch):
    from i2iuda.cli import DEFAULT_STUDY, lanes_asked

    assert lanes_asked(DEFAULT_STUDY, []) == 2 and lanes_asked(DEFAULT_STUDY, ["lanes=1"]) == 1
    assert lanes_asked(DEFAULT_STUDY, ["lanes=x"]) == 1 and lanes_asked(tmp_path / "absent.yaml", []) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert lanes_asked(DEFAULT_STUDY, []) == 1  # torchrun: the study refuses lanes


def test_a_failing_lane_stops_the_study_with_its_line(tmp_path):
    done = []
    jobs = [Job("a", set(), (str(tmp_path), "a", True)), Job("b", {"a"}, (str(tmp_path), "b"))]
    with pytest.raises(UserError, match="a: a bad option"):
        run_in_lanes(jobs, 2, record, print, lambda job, s, peak: done.append(job.name))
    assert done == [] and not (tmp_path / "b.json").exists()


def test_tiny_study_in_two_lanes(tmp_path):
    from test_study import tiny

    from i2iuda.study import run_study

    cfg = tiny(tmp_path, "lanes=2", "workers=1")  # loader workers inside a lane (translation, evaluation)
    metrics = run_study(cfg, tmp_path / "run", progress=False)
    assert set(metrics["arms"]) == {"source_only", "cyclegan", "oracle"}
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert set(stages) == {"data", "translate:cyclegan", "apply:cyclegan", "segment:source_only",
                           "segment:cyclegan", "segment:oracle", "look:source_only", "look:cyclegan",
                           "evaluate:source_only", "evaluate:cyclegan", "evaluate:oracle", "report"}
    assert (tmp_path / "run" / "report.html").is_file()
    before = (tmp_path / "run" / "stages.json").read_text()
    run_study(cfg, tmp_path / "run", progress=False)  # everything done: nothing runs, nothing changes
    assert (tmp_path / "run" / "stages.json").read_text() == before


def test_lanes_setting_is_checked(tmp_path, monkeypatch):
    from test_study import tiny

    from i2iuda.study import run_study

    with pytest.raises(UserError, match=r"lanes=0: out of range \(expected >= 1\)"):  # refused at load
        tiny(tmp_path, "lanes=0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="lanes=2 under torchrun"):
        run_study(tiny(tmp_path, "lanes=2"), tmp_path / "run", progress=False)
