"""Trust: checkpoints that cannot run code, one writer per run folder, kill -9 anywhere, disk full.

The kill tests start the real command line in a subprocess, stop it inside a chosen write (the
test hook I2IUDA_TEST_PAUSE_IN_WRITE in io.py: data written, not yet renamed into place), kill it
with SIGKILL, resume or re-run it, and compare with an uninterrupted run bit for bit. The kill
points are drawn from a seeded RNG and printed (pytest -s, or the assertion message).
"""
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2iuda import cli
from i2iuda.checkpoint import load_state, load_weights, save_state
from i2iuda.config import load_config
from i2iuda.translation.train import TranslateConfig, train_translator

TINY_T = ["model.ngf=8", "model.ndf=8", "model.n_blocks=1", "data.size=[32,64]", "data.batch_size=2",
          "data.workers=0", "device=cpu", "log_every=1", "model.pool_size=3"]
TINY_S = ["model.backbone=tu-resnet10t", "optimizer=adamw", "lr=0.004", "data.size=[32,64]", "data.crop=[32,64]",
          "data.batch_size=4", "data.workers=0", "device=cpu", "log_every=1"]
CLI = [sys.executable, "-c", "from i2iuda.cli import main; main()"]
PAUSE = "I2IUDA_TEST_PAUSE_IN_WRITE"


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def kill_inside(args: list[str], point: tuple[str, int], log: list) -> None:
    """Run the CLI until it pauses inside write ``point`` = (file-name glob, k), then SIGKILL it."""
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, PAUSE: f"{point[0]}:{point[1]}"})
    lines = []
    for line in p.stderr:  # ends when the process exits without pausing (then the test fails)
        lines.append(line)
        if line.startswith("i2iuda-test: paused"):
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait(timeout=60)
    log.append((point, p.returncode, lines[-1].strip() if lines else ""))
    assert p.returncode == -signal.SIGKILL, f"not killed at {point}: {''.join(lines)[-2000:]}"


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


def same_files(a: Path, b: Path, pattern: str = "*") -> int:
    fa = sorted(p.relative_to(a) for p in a.rglob(pattern) if p.is_file() and p.name != ".i2iuda.lock")
    fb = sorted(p.relative_to(b) for p in b.rglob(pattern) if p.is_file() and p.name != ".i2iuda.lock")
    assert fa == fb
    for rel in fa:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    return len(fa)


def same_state(a: Path, b: Path) -> None:
    """Two training states equal bit for bit: every tensor and number of the trainer."""
    sa, sb = load_state(a)["trainer"], load_state(b)["trainer"]

    def flat(x, key=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from flat(v, f"{key}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from flat(v, f"{key}[{i}]")
        else:
            yield key, x

    fa, fb = dict(flat(sa)), dict(flat(sb))
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def main_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The command line in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["i2iuda", *args])
    try:
        cli.main()
        code = 0  # a command that finishes returns
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def translator_run(synth_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trust") / "translator"
    over = TINY_T + [f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train",
                     "epochs=1", "steps_per_epoch=2"]
    train_translator(load_config(TranslateConfig, None, over), run, progress=False)
    return run


class RunsCode:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_checkpoint_is_refused_with_one_line_and_runs_no_code(translator_run, synth_root, tmp_path,
                                                                         monkeypatch, capsys):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(translator_run), str(run)], check=True)
    marker = tmp_path / "pwned"
    evil = {"format": "i2iuda.state/1", "step": 1, "config": RunsCode(marker), "trainer": {}}
    torch.save(evil, run / "checkpoints" / "last.pt")
    (run / "checkpoints" / "translator.safetensors").write_bytes(pickle.dumps(RunsCode(marker)))
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the payload is live: unpickling runs it
    assert (tmp_path / "control").exists()
    r = run_cli("translate", "apply", "--run", str(run), "--source", f"synthetic:{synth_root}:source",
                "--out", str(tmp_path / "out"))  # the command of the report, as a real process
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "translator.safetensors: not a readable safetensors file" in r.stderr and not marker.exists()
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "last.pt: refused" in err, err
    assert not marker.exists()
    seg = tmp_path / "seg"
    (seg / "checkpoints").mkdir(parents=True)
    (seg / "checkpoints" / "best.safetensors").write_bytes(pickle.dumps(RunsCode(marker)))
    code, err = main_cli(monkeypatch, capsys, "segment", "eval", "--run", str(seg), "--data",
                         f"synthetic:{synth_root}:target-val", "--out", str(tmp_path / "eval"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not marker.exists(), err
    torch.save(evil, seg / "checkpoints" / "last.pt")
    code, err = main_cli(monkeypatch, capsys, "segment", "train", "--out", str(seg), "--resume")
    assert code == 2 and not marker.exists(), err

def test_damaged_or_foreign_checkpoints_fail_with_one_line(translator_run, synth_root, tmp_path, monkeypatch, capsys):
    apply = ["translate", "apply", "--source", f"synthetic:{synth_root}:source-val", "--out", str(tmp_path / "o")]

    def variant(name: str) -> Path:
        run = tmp_path / name
        subprocess.run(["cp", "-r", str(translator_run), str(run)], check=True)
        return run

    run = variant("truncated")
    w = run / "checkpoints" / "translator.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, err = main_cli(monkeypatch, capsys, *apply, "--run", str(run))
    assert code == 2 and "translator.safetensors: not a readable safetensors file" in err, err
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    assert code == 2 and "last.pt: not a readable checkpoint" in err, err

    run = variant("wider")  # the config says ngf=16, the weights are ngf=8
    cfg = (run / "config.yaml").read_text().replace("ngf: 8", "ngf: 16")
    (run / "config.yaml").write_text(cfg)
    code, err = main_cli(monkeypatch, capsys, *apply, "--run", str(run))
    assert code == 2 and "does not fit the cyclegan" in err and "size mismatch" in err, err
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    assert code == 2 and "last.pt: does not fit this run" in err, err

    run = variant("wrong_keys")
    save_state({"step": 2}, run / "checkpoints" / "last.pt")
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    assert code == 2 and "does not fit this run (KeyError" in err, err

    run = variant("segmenter_weights")  # another kind of weights file
    from i2iuda.checkpoint import save_weights
    save_weights(run / "checkpoints" / "translator.safetensors", {"w": torch.zeros(1)}, "segmenter", config={})
    code, err = main_cli(monkeypatch, capsys, *apply, "--run", str(run))
    assert code == 2 and "holds a segmenter's weights, not a translator's" in err, err

    run = variant("other_method")  # the weights of another method
    tensors, meta = load_weights(run / "checkpoints" / "translator.safetensors", "translator")
    save_weights(run / "checkpoints" / "translator.safetensors", tensors, "translator",
                 config={**meta["config"], "method": "cut"})
    code, err = main_cli(monkeypatch, capsys, *apply, "--run", str(run))
    assert code == 2 and "holds a cut translator, but" in err, err
    assert all(len(e.strip().splitlines()) == 1 for e in [err])


def test_older_checkpoints_are_refused_until_the_user_converts_them(translator_run, synth_root, tmp_path,
                                                                   monkeypatch, capsys):
    import numpy as np

    run = tmp_path / "old"
    subprocess.run(["cp", "-r", str(translator_run), str(run)], check=True)
    new = load_state(run / "checkpoints" / "last.pt")
    # what i2iuda wrote before: numpy's RNG state pickled as an ndarray tuple, no weights file
    old = {k: v for k, v in new.items() if k != "format"}
    old["rng"] = {**new["rng"], "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save(old, run / "checkpoints" / "last.pt")
    (run / "checkpoints" / "translator.safetensors").unlink()
    apply = ["translate", "apply", "--run", str(run), "--source", f"synthetic:{synth_root}:source-val",
             "--out", str(tmp_path / "o")]
    code, err = main_cli(monkeypatch, capsys, *apply)
    assert code == 2 and f"i2iuda checkpoint convert {run}" in err, err
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    assert code == 2 and "refused" in err and "i2iuda checkpoint convert" in err, err
    code, _ = main_cli(monkeypatch, capsys, "checkpoint", "convert", str(run))
    assert code in (0, None)
    converted, _ = load_weights(run / "checkpoints" / "translator.safetensors", "translator")
    original, _ = load_weights(translator_run / "checkpoints" / "translator.safetensors", "translator")
    assert all(torch.equal(converted[k], original[k]) for k in original)
    code, err = main_cli(monkeypatch, capsys, *apply)
    assert code in (0, None), err


def test_a_full_disk_fails_with_one_line_and_keeps_the_previous_checkpoint(translator_run, tmp_path,
                                                                         monkeypatch, capsys):
    import i2iuda.io as io_module

    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(translator_run), str(run)], check=True)
    cfg = (run / "config.yaml").read_text().replace("epochs: 1", "epochs: 2")
    (run / "config.yaml").write_text(cfg)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(io_module.os, "fdopen", Full)
    code, err = main_cli(monkeypatch, capsys, "translate", "train", "--out", str(run), "--resume")
    monkeypatch.undo()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and str(run) in err, err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert load_state(run / "checkpoints" / "last.pt")["step"] == 2
    assert no_temporaries(run)


def resume_to_the_end_and_compare(command: str, once: Path, killed: Path, log: list) -> None:
    """Resume the killed run to its end: its training state and weights equal the uninterrupted
    run's bit for bit, and no temporary file is left."""
    r = run_cli(command, "train", "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    print(f"{command} train kill points:", log)
    same_state(once / "checkpoints" / "last.pt", killed / "checkpoints" / "last.pt")
    same_files(once / "checkpoints", killed / "checkpoints", "*.safetensors")
    assert no_temporaries(killed), log


def test_kill_9_in_translator_training_resumes_bit_for_bit(synth_root, tmp_path):
    rng = random.Random(14)
    points = [("last.pt", rng.choice([2, 3])),  # inside a checkpoint write, after the first checkpoint
              (rng.choice(["step_*.png", "translator.safetensors"]), rng.choice([1, 2]))]  # an output write
    over = [*TINY_T, "image_every=2", "checkpoint_every=2", "epochs=2", "steps_per_epoch=4",
            f"source=synthetic:{synth_root}:source-train", f"target=synthetic:{synth_root}:target-train"]
    once, killed = tmp_path / "once", tmp_path / "killed"
    train_translator(load_config(TranslateConfig, None, over), once, progress=False)  # uninterrupted
    log = []
    kill_inside(["translate", "train", "--out", str(killed), *over], points[0], log)
    kill_inside(["translate", "train", "--out", str(killed), "--resume"], points[1], log)
    resume_to_the_end_and_compare("translate", once, killed, log)
    same_files(once / "images", killed / "images")
    assert (once / "losses.jsonl").read_text() == (killed / "losses.jsonl").read_text()


def test_kill_9_in_segmenter_training_resumes_bit_for_bit_and_the_folder_has_one_writer(synth_root, tmp_path):
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter

    rng = random.Random(14)
    points = [("last.pt", rng.choice([2, 3])),  # inside a checkpoint write, after the first checkpoint
              (rng.choice(["best.safetensors", "history.json"]), 1)]  # an output write of an epoch's end
    over = [*TINY_S, "epochs=2", "steps_per_epoch=3", "checkpoint_every=2",
            f"train=synthetic:{synth_root}:source-train", f"val=synthetic:{synth_root}:source-val"]
    once, killed = tmp_path / "once", tmp_path / "killed"
    train_segmenter(load_config(SegmentConfig, None, over), once, progress=False)  # uninterrupted
    # one writer: while the first process is paused inside a checkpoint write, a second one on the
    # same folder is refused with one line naming the first; the kill -9 frees the folder
    p = subprocess.Popen([*CLI, "segment", "train", "--out", str(killed), *over], stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True, env={**os.environ, PAUSE: "%s:%d" % points[0]})
    for line in p.stderr:
        if line.startswith("i2iuda-test: paused"):
            break
    second = run_cli("segment", "train", "--out", str(killed), "--resume")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    log = [(points[0], p.returncode, line.strip())]
    assert second.returncode == 2 and f"in use by process {p.pid} on" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    print("second writer:", second.stderr.strip())
    kill_inside(["segment", "train", "--out", str(killed), "--resume"], points[1], log)
    resume_to_the_end_and_compare("segment", once, killed, log)
    assert json.loads((once / "history.json").read_text()) == json.loads((killed / "history.json").read_text())


def test_kill_9_in_apply_eval_and_predict_then_rerun_gives_the_same_files(translator_run, synth_root, tmp_path):
    from i2iuda.segmentation.evaluate import EvalProtocol, run_eval
    from i2iuda.segmentation.train import SegmentConfig, train_segmenter
    from i2iuda.translation.apply import apply_translator
    from i2iuda.translation.train import load_translator

    rng = random.Random(14)
    log = []
    source = f"synthetic:{synth_root}:source"
    translator, cfg = load_translator(translator_run, "cpu")
    apply_translator(translator, source, tmp_path / "apply_once", tuple(cfg.data.size), workers=0, progress=False)
    apply = ["translate", "apply", "--run", str(translator_run), "--source", source, "--workers", "0"]
    kill_inside([*apply, "--out", str(tmp_path / "apply_killed")], ("*.png", rng.randint(41, 60)), log)
    r = run_cli(*apply, "--out", str(tmp_path / "apply_killed"))
    assert r.returncode == 0, r.stderr[-2000:]
    n = same_files(tmp_path / "apply_once", tmp_path / "apply_killed")
    assert n == 2 * 40 and no_temporaries(tmp_path / "apply_killed")  # frames and their labels

    seg, data = tmp_path / "seg", f"synthetic:{synth_root}:target-val"
    train_segmenter(load_config(SegmentConfig, None, [*TINY_S, "epochs=1", "steps_per_epoch=2",
                                                       f"train=synthetic:{synth_root}:source-train",
                                                       f"val=synthetic:{synth_root}:source-val"]), seg, progress=False)
    run_eval(seg, data, tmp_path / "eval_once", EvalProtocol(), save_predictions=True, pictures=2, device="cpu",
             workers=0, progress=False)
    ev = ["segment", "eval", "--run", str(seg), "--data", data, "--save-predictions", "--pictures", "2",
          "--workers", "0", "--device", "cpu"]
    kill_inside([*ev, "--out", str(tmp_path / "eval_killed")], ("*.png", rng.randint(2, 8)), log)
    r = run_cli(*ev, "--out", str(tmp_path / "eval_killed"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert same_files(tmp_path / "eval_once" / "predictions", tmp_path / "eval_killed" / "predictions") == 12
    for name in ("metrics.json", "metrics.txt"):
        assert (tmp_path / "eval_once" / name).read_text() == (tmp_path / "eval_killed" / name).read_text()
    assert no_temporaries(tmp_path / "eval_killed")

    # segment predict with pseudo-labels: 12 label + 12 confidence PNGs, then 12 pseudo-labels; the
    # kill lands in either pass
    from i2iuda.segmentation.predict import predict, pseudo_labels

    predict([seg], data, tmp_path / "predict_once", device="cpu", progress=False)
    pseudo_labels(tmp_path / "predict_once", tmp_path / "predict_once" / "pseudo", 50)
    pr = ["segment", "predict", "--run", str(seg), "--data", data, "--pseudo-percentile", "50", "--workers", "0",
          "--device", "cpu"]
    kill_inside([*pr, "--out", str(tmp_path / "predict_killed")], ("*.png", rng.randint(3, 34)), log)
    r = run_cli(*pr, "--out", str(tmp_path / "predict_killed"))
    assert r.returncode == 0, r.stderr[-2000:]
    print("apply / eval / predict kill points:", log)
    once, killed = tmp_path / "predict_once", tmp_path / "predict_killed"
    assert same_files(once, killed, "*.png") == 36 and no_temporaries(killed)
    about = [json.loads((d / "pseudo" / "about.json").read_text()) for d in (once, killed)]
    for a in about:
        a.pop("predictions")  # the folder's own path
    assert about[0] == about[1]
    assert (once / "about.json").read_text() == (killed / "about.json").read_text()


def test_a_folder_inside_a_held_folder_is_refused_and_the_lock_dies_with_its_process(tmp_path):
    from i2iuda.errors import UserError
    from i2iuda.runlock import check_free, holding

    study = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from i2iuda.runlock import holding\n"
                               f"with holding({str(study)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        with pytest.raises(UserError, match=f"inside {study}.*in use by process {holder.pid} on"):
            check_free(study / "segment" / "source_only")
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with holding(study):
                pass
    finally:
        holder.kill()
        holder.wait()
    with holding(study / "segment" / "source_only"):  # free once the holder is gone (SIGKILL)
        with holding(study / "segment" / "source_only" / "checkpoints"):  # nested in this process: shared
            pass
