"""Stages side by side (lanes.py): order, lanes, threads, failures; a tiny study in two lanes."""
import json
import os

import pytest

from i2iuda.errors import UserError
from i2iuda.study.lanes import Job, run_in_lanes, threads_per_lane


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
                           "segment:cyclegan", "segment:oracle", "evaluate:source_only", "evaluate:cyclegan",
                           "evaluate:oracle", "report"}
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
