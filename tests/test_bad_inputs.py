"""Bad input, table-driven, over every command: each row is a command line a user could type (or a
damaged file a disk could hold) that must give one line on stderr naming what is wrong, exit code 2,
no traceback, and write nothing. The next option added gets the same treatment by adding a row.

Placeholders in a row: {S} the session's benchmark root, {T} the test's folder (the working
directory), and files the test writes there first: {file} (a plain file), {cycle} (a preset whose
_base chain comes back to itself), {study} (a study folder, whose files {damage} spoils)."""
import re
import sys

import pytest

from i2iuda import cli

SRC, TGT, VAL = "synthetic:{S}:source-train", "synthetic:{S}:target-train", "synthetic:{S}:source-val"
TRANSLATE = ["translate", "train", "--out", "{T}/out", "--source", SRC, "--target", TGT]
SEGMENT = ["segment", "train", "--out", "{T}/out", "--train", SRC, "--val", VAL]
ADAPT = ["segment", "adapt", "--out", "{T}/out", "--train", SRC, "--val", VAL, "--target", TGT]

CASES = [  # (id, command line, what the line must say; damage: {file name: text} written into {study} first)
    # non-finite numbers: no range lets them through
    ("run nan lr", ["run", "--out", "{T}/out", "segment.lr=nan"], r"segment\.lr=nan: expected a finite number"),
    ("run inf lr", ["run", "--out", "{T}/out", "segment.lr=-inf"], r"segment\.lr=-inf: expected a finite number"),
    ("run nan alpha", ["run", "--out", "{T}/out", "online={x: {alpha: .nan}}"], r"online\.x\.alpha=nan"),
    ("run inf mic_lambda", ["run", "--out", "{T}/out", "online={x: {mic_lambda: inf}}"], r"online\.x\.mic_lambda=inf"),
    ("run nan beta", ["run", "--out", "{T}/out", "translate.methods={f: {method: fda, beta: nan}}"], r"model\.beta=nan"),
    ("translate nan lr", [*TRANSLATE, "model.lr=nan"], r"model\.lr=nan: expected a finite number"),
    ("translate nan loss weight", [*TRANSLATE, "model.lambda_cycle=nan"], r"model\.lambda_cycle=nan"),
    ("segment nan momentum", [*SEGMENT, "momentum=nan"], r"momentum=nan"),
    ("adapt nan alpha", [*ADAPT, "online.alpha=nan"], r"online\.alpha=nan"),
    ("adapt inf weight", [*ADAPT, "online.mic_lambda=inf"], r"online\.mic_lambda=inf"),
    ("synth nan gap", ["synth", "--out", "{T}/out", "--source-gap", "nan"], r"--source-gap nan: out of range"),
    # ranges and types
    ("run negative seed", ["run", "--out", "{T}/out", "seed=-1"], r"seed=-1: out of range"),
    ("run float workers", ["run", "--out", "{T}/out", "workers=1.5"], r"workers: expected int"),
    ("run size one value", ["run", "--out", "{T}/out", "segment.data.size=[16]"], r"segment\.data\.size: expected 2 values"),
    ("run unknown method", ["run", "--out", "{T}/out", "translate.methods=[pix2pix]"], r"method 'pix2pix'"),
    ("run unknown key", ["run", "--out", "{T}/out", "segment.lrr=1"], r"unknown key\(s\) lrr"),
    ("run bad classes", ["run", "--out", "{T}/out", "eval.classes=20"], r"eval\.classes: '?20'? is not one of 19, 16, 13"),
    ("run online source", ["run", "--out", "{T}/out", "online={x: {source: nope}}"], r"online\.x\.source: 'nope'"),
    ("synth zero frames", ["synth", "--out", "{T}/out", "--n-source", "0"], r"--n-source 0: out of range"),
    ("synth bad size", ["synth", "--out", "{T}/out", "--size", "0x10"], r"--size '0x10'"),
    ("synth bad preset", ["synth", "--out", "{T}/out", "--preset", "big"], r"--preset 'big'"),
    ("segment zero batch", [*SEGMENT, "data.batch_size=0"], r"data\.batch_size=0: out of range"),
    ("segment bad arch", [*SEGMENT, "model.arch=unet"], r"model\.arch: 'unet' is not one of"),
    ("translate size not /4", [*TRANSLATE, "data.size=[30,64]"], r"data\.size=30x64"),
    ("translate zero epochs", [*TRANSLATE, "epochs=0"], r"epochs=0: out of range"),
    ("translate unknown method", [*TRANSLATE, "--method", "unit"], r"method 'unit'"),
    # surprises: an emptied section, mix on adapt
    ("run emptied section", ["run", "--out", "{T}/out", "segment={}"], r"segment is a section of settings"),
    ("run emptied data", ["run", "--out", "{T}/out", "data={}"], r"data is a section of settings"),
    ("adapt mix", [*ADAPT, "mix=pseudo:{T}"], r"mix: segment train's self-training setting"),
    ("adapt init_from", [*ADAPT, "init_from={T}"], r"init_from: segment train's self-training setting"),
    # specs
    ("spec limit 0", ["data", "check", "synthetic:{S}:source,limit=0"], r"limit=0: out of range"),
    ("spec limit -3", ["data", "check", "synthetic:{S}:source,limit=-3"], r"limit=-3: out of range"),
    ("spec val_fraction nan", ["data", "check", "gta5:{S}/source:train,val_fraction=nan"], r"val_fraction=nan: out"),
    ("spec val_fraction 1.5", ["data", "check", "gta5:{S}/source:train,val_fraction=1.5"], r"val_fraction=1\.5: out"),
    ("spec seed", ["data", "check", "synthetic:{S}:source,seed=-2"], r"seed=-2: out of range"),
    ("spec bad option", ["data", "check", "synthetic:{S}:source,lim=3"], r"bad option 'lim=3'"),
    ("spec kind", ["data", "check", "mapillary:{S}"], r"KIND one of"),
    ("spec folder", ["data", "check", "gta5:{T}/absent"], r"folder .*absent does not exist"),
    ("spec split", ["data", "check", "synthetic:{S}:test"], r"synthetic split must be one of"),
    ("check stride", ["data", "check", "synthetic:{S}:source", "--stride", "0"], r"--stride"),
    ("run spec in study", ["run", "--out", "{T}/out", "data.synthetic_root=null",
                           "data.source_train=gta5:{T}:train,limit=0"], r"limit=0: out of range"),
    # paths
    ("run out is a file", ["run", "--out", "{file}"], r"is a file, not a folder"),
    ("adapt out is a file", ["segment", "adapt", "--out", "{file}", "--train", SRC, "--val", VAL, "--target", TGT],
     r"is a file, not a folder"),
    ("translate out under a file", [*TRANSLATE[:3], "{file}/run", *TRANSLATE[4:]], r"is a file, not a folder"),
    ("report out is a file", ["report", "{study}", "{study}", "--out", "{file}"], r"--out .*: a file is there"),
    ("base cycle", ["run", "--out", "{T}/out", "--config", "{cycle}"], r"makes a cycle \(a\.yaml -> b\.yaml -> c\.yaml -> a\.yaml\)"),
    ("config missing", ["run", "--out", "{T}/out", "--config", "{T}/absent.yaml"], r"absent\.yaml: file not found"),
    ("resume nothing", [*TRANSLATE, "--resume"], r"--resume: .*config\.yaml not found"),
    # the parser's own
    ("unknown flag", ["run", "--nope"], r"run: No such option: --nope"),
    ("wrong type", ["synth", "--out", "{T}/out", "--seed", "abc"], r"synth: Invalid value for '--seed'"),
    ("missing option", ["segment", "eval", "--data", VAL], r"segment eval: Missing option '--run'"),
    ("seeds", ["run", "--out", "{T}/out", "--seeds", "3,3"], r"--seeds '3,3'"),
    ("from", ["run", "--out", "{T}/out", "--from", "segmnt"], r"--from 'segmnt'"),
    # other commands' options
    ("apply neither", ["translate", "apply", "--source", SRC, "--out", "{T}/out"], r"give --run RUN"),
    ("apply fda no target", ["translate", "apply", "--method", "fda", "--source", SRC, "--out", "{T}/out"],
     r"--method fda: give --target"),
    ("apply bad run", ["translate", "apply", "--run", "{T}/absent", "--source", SRC, "--out", "{T}/out"],
     r"no config\.yaml"),
    ("eval bad run", ["segment", "eval", "--run", "{T}/absent", "--data", VAL, "--out", "{T}/out"], r"no checkpoint"),
    ("eval classes", ["segment", "eval", "--run", "{T}/absent", "--data", VAL, "--out", "{T}/out", "--classes", "20"],
     r"--classes '20'"),
    ("eval scales", ["segment", "eval", "--run", "{T}/absent", "--data", VAL, "--out", "{T}/out", "--scales", "a,b"],
     r"--scales 'a,b'"),
    ("predict bits", ["segment", "predict", "--run", "{T}/absent", "--data", VAL, "--out", "{T}/out",
                      "--confidence-bits", "12"], r"--confidence-bits 12"),
    ("evaluate no preds", ["evaluate", "--pred", "{T}/absent", "--gt", VAL], r"--pred .*absent: folder not found"),
    ("report absent", ["report", "{T}/absent"], r"absent: no metrics\.json"),
    ("convert absent", ["checkpoint", "convert", "{T}/absent"], r"absent: not a folder"),
    # damaged run files
    ("report truncated metrics", ["report", "{study}"], r"metrics\.json: not valid JSON", {"metrics.json": '{"arms": {'}),
    ("report empty metrics", ["report", "{study}"], r"metrics\.json: empty", {"metrics.json": ""}),
    ("report mistyped metrics", ["report", "{study}"], r"metrics\.json: not a study's metrics", {"metrics.json": "[1, 2]"}),
    ("report mistyped row", ["report", "{study}"], r"metrics\.json: not a study's metrics",
     {"metrics.json": '{"arms": {"a": {"kind": "x", "mIoU": "high"}}, "ranking": []}'}),
    ("compare mistyped", ["report", "{study}", "{study}", "--out", "{T}/cmp"], r"metrics\.json: not a study's metrics",
     {"metrics.json": '{"arms": 3}'}),
    ("report corrupt study.json", ["report", "{study}"], r"study\.json: not valid JSON", {"study.json": "{,"}),
    ("report study.json of another shape", ["report", "{study}"], r"study\.json: not a study's study\.json",
     {"study.json": '{"arms": [{"name": 1}]}'}),
]
assert len(CASES) >= 40


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_with_exit_code_2_and_writes_nothing(case, synth_root, tmp_path, monkeypatch, capsys):
    name, argv, message, damage = (*case, {})[:4]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder\n")
    for a, b in (("a", "b"), ("b", "c"), ("c", "a")):
        (tmp_path / f"{a}.yaml").write_text(f"segment: {{_base: {b}.yaml}}\n")
    study = tmp_path / "study"
    study.mkdir()
    (study / "metrics.json").write_text('{"schema": "i2iuda.study.metrics/3", "arms": {"source_only": {"kind": '
                                        '"source_only", "bound": "lower", "PA": 1, "MPA": 1, "mIoU": 1, "FWIoU": 1, '
                                        '"per_class_IoU": {}, "delta_mIoU": 0, "gap_closed": null}}, "ranking": []}')
    (study / "study.json").write_text('{"name": "s", "seed": 0, "specs": {}, "arms": []}')
    for file, text in damage.items():
        (study / file).write_text(text)
    before = files_under(tmp_path)
    places = {"{S}": synth_root, "{T}": tmp_path, "{file}": tmp_path / "file", "{cycle}": tmp_path / "a.yaml",
              "{study}": study}

    def fill(arg: str) -> str:
        for k, v in places.items():
            arg = arg.replace(k, str(v))
        return arg

    monkeypatch.setattr(sys, "argv", ["i2iuda", *map(fill, argv)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("i2iuda: error: ") and "Traceback" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert files_under(tmp_path) == before  # nothing written: no output folder, no data/, no lock


def test_an_emptied_mapping_of_entries_is_said_on_the_console(capsys):
    """``translate.settings={}`` (a mapping of entries, not a section of settings) empties it, as
    ``self_train={}`` does by design; the console says what was dropped."""
    from pathlib import Path

    from i2iuda.config import load_config
    from i2iuda.study import StudyConfig

    preset = Path(__file__).resolve().parents[1] / "configs" / "study_online_cpu.yaml"
    assert load_config(StudyConfig, preset, ["translate.settings={}"]).translate.settings == {}
    assert "override translate.settings={}: emptied (the preset's cyclegan, cut, fda dropped)" in capsys.readouterr().err


def test_names_print_as_text_not_markup(capsys):
    """An arm named x: "segment:x:" once printed as an emoji through rich's markup."""
    from i2iuda.progress import say

    say("stage segment:x: done [bold]not markup[/bold]", "dim")
    assert "stage segment:x: done [bold]not markup[/bold]" in capsys.readouterr().err


def test_a_library_warning_does_not_come_between_the_command_and_its_error(monkeypatch, capsys):
    """A warning raised before the error goes to logging (shown with --verbose), not to stderr."""
    import warnings

    from i2iuda.errors import UserError

    def check(*args, **kwargs):
        warnings.warn("a torch warning", UserWarning)
        raise UserError("the real error")

    monkeypatch.setattr("i2iuda.data.check.check_dataset", check)
    monkeypatch.setattr(sys, "argv", ["i2iuda", "data", "check", "x"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines() == ["i2iuda: error: the real error"]
