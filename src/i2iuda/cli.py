"""The ``i2iuda`` command line: a thin layer over library functions (which the tests call too).

Bad input raises ``UserError``; ``main`` prints it as one line and exits with code 2
(``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Unsupervised domain adaptation of semantic segmentation through image-to-image translation.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect data sets.")
app.add_typer(data_app, name="data")
segment_app = typer.Typer(no_args_is_help=True, help="Train and evaluate segmentation models (DeepLab).")
app.add_typer(segment_app, name="segment")
translate_app = typer.Typer(no_args_is_help=True, help="Train an unpaired translator (CycleGAN, CUT, FDA), apply it, score it.")
app.add_typer(translate_app, name="translate")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Convert checkpoints of older i2iuda runs.")
app.add_typer(checkpoint_app, name="checkpoint")

_state = {"debug": False}


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """'HxW' -> (H, W)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
        return h, w
    except ValueError:
        raise UserError(f"{option} {text!r}: expected HEIGHTxWIDTH, e.g. 128x256") from None


def _overrides(overrides: list[str] | None, **named: str | None) -> list[str]:
    """key=value overrides, plus the data specs given as named options."""
    return list(overrides or []) + [f"{k}={v}" for k, v in named.items() if v]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks; log debug messages."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synthetic"), "--out", help="Folder to write the benchmark to."),
    n_source: int = typer.Option(2000, help="Source frames (GTA5 layout; 10% of them are its val holdout)."),
    n_target_train: int = typer.Option(2000, help="Target train frames (Cityscapes layout)."),
    n_target_val: int = typer.Option(500, help="Target val frames (Cityscapes layout, labelled)."),
    size: str = typer.Option("64x128", help="Frame size HxW (the CPU preset's: frames are drawn at the size the nets consume)."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same frames."),
    workers: int = typer.Option(2, help="Processes that render and write frames."),
    source_gap: float | None = typer.Option(None, "--source-gap", help="How far the source's colours are from the "
                                            "target's: 0 (its palette) .. 1 (a game look of it) .. 2 (the hard "
                                            "variant's other hues); default: the benchmark's."),
    preview: bool = typer.Option(False, "--preview", help="Also write OUT/preview.png: frames with label overlays."),
    preset: str | None = typer.Option(None, "--preset", help="real-sizes: a few frames at GTA5's 1914x1052 "
                                                             "(OUT/gta5) and Cityscapes' 2048x1024 (OUT/cityscapes) "
                                                             "for configs/study_rehearsal_real_sizes.yaml."),
) -> None:
    """Write the built-in synthetic two-domain benchmark (source in GTA5's layout, target in Cityscapes')."""
    import time

    from .config import out_of_range
    from .data.synthetic import SynthConfig, generate, generate_real_sizes, write_preview

    if preset is not None:
        if preset != "real-sizes":
            raise UserError(f"--preset {preset!r}: the one preset is real-sizes")
        t0 = time.perf_counter()
        generate_real_sizes(out, seed=seed, workers=workers)
        typer.echo(f"wrote {out}/gta5 (1914x1052) and {out}/cityscapes (2048x1024) in {time.perf_counter() - t0:.1f}s")
        return

    h, w = parse_size(size)
    cfg = SynthConfig(height=h, width=w, n_source=n_source, n_target_train=n_target_train,
                      n_target_val=n_target_val, seed=seed, workers=workers)
    if source_gap is not None:
        cfg.source_gap = source_gap
    if bad := out_of_range(cfg):  # the benchmark's RANGES, named as the options
        key, value, allowed = bad
        option = "--size" if key in ("height", "width") else f"--{key.replace('_', '-')}"
        raise UserError(f"{option} {value:g}: out of range (expected {allowed})")
    t0 = time.perf_counter()
    generate(out, cfg)
    dt = time.perf_counter() - t0
    total = n_source + n_target_train + n_target_val
    typer.echo(f"wrote {total} frames to {out} in {dt:.1f}s ({total / dt:.0f} frames/s, {workers} workers)")
    typer.echo(f"  source: synthetic:{out}:source-train / source-val   target: synthetic:{out}:target-train / target-val")
    if preview:
        typer.echo(f"preview: {write_preview(out)}")


@data_app.command("check")
def data_check(
    spec: str = typer.Argument(..., help="Data set as KIND:PATH[:SPLIT][,limit=N,seed=S], e.g. cityscapes:/data/cityscapes:val."),
    workers: int = typer.Option(2, help="Decoding workers."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
    input_height: int | None = typer.Option(None, "--input-height", help="Height the network sees the frames at "
                                            "(default: their own), for object thickness in output-stride cells."),
    stride: int = typer.Option(16, "--stride", help="The network's output stride, for the same."),
) -> None:
    """Summarise a data set: frame count, image sizes, per class its pixel share and how thin its
    thinnest objects are (px and output-stride cells), and problems found."""
    from .data.check import check_dataset, format_report
    from .data.labels import CLASS_NAMES
    from .io import write_json

    if stride < 1 or (input_height is not None and input_height < 1):
        raise UserError("--stride and --input-height must be positive")
    report = check_dataset(spec, workers=workers)
    typer.echo(format_report(report, input_height, stride))
    if json_out:
        write_json(json_out, {"spec": report.spec, "frames": report.frames, "labelled": report.labelled,
                              "image_sizes": {f"{w}x{h}": n for (w, h), n in report.image_sizes.items()},
                              "class_frequency": report.class_frequency, "ignore_fraction": report.ignore_fraction,
                              "objects": {n: len(report.thickness.get(c, ())) for c, n in enumerate(CLASS_NAMES)},
                              "thickness_median_px": report.thinnest(0.5),
                              "thickness_10pct_px": report.thinnest(0.1),
                              "unknown_colour_pixels": report.unknown_colour_pixels, "problems": report.problems})


@translate_app.command("train")
def translate_train(
    out: Path = typer.Option(..., "--out", help="Run folder (config, logs, grids, checkpoints)."),
    source: str | None = typer.Option(None, help="Source data spec, e.g. gta5:/data/GTA5:train."),
    target: str | None = typer.Option(None, help="Target data spec, e.g. cityscapes:/data/cityscapes:train."),
    method: str | None = typer.Option(None, help="cyclegan (default), cut (CUT; model.mode=fastcut for FastCUT) "
                                                  "or fda (trains nothing: writes the run folder)."),
    config: Path | None = typer.Option(None, "--config", help="YAML config (see configs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    overrides: list[str] = typer.Argument(None, help="Config overrides key=value, e.g. model.ngf=32 epochs=10."),
) -> None:
    """Train a translator source -> target. Resumable; under torchrun it trains with DDP."""
    from .runtime import init_runtime
    from .segmentation.models import frozen_segmenter
    from .translation.methods import method as get_method
    from .translation.train import resolve_config, train_translator

    cfg = resolve_config(out, config, _overrides(overrides, source=source, target=target, method=method), resume)
    judge_run = get_method(cfg.method).judge_run(cfg.model)  # CyCADA's f: the caller loads it
    judge = frozen_segmenter(judge_run, init_runtime(cfg.device).device) if judge_run is not None else None
    summary = train_translator(cfg, out, resume=resume, judge=judge)
    if summary.get("trains") is False:
        typer.echo(f"{summary['description']}: nothing to train; run folder: {out}")
        return
    typer.echo(f"{summary['steps']} steps in {summary['wall_seconds']:.0f}s "
               f"({summary['steps_per_second']} steps/s); run folder: {out}")


@translate_app.command("apply")
def translate_apply(
    source: str = typer.Option(..., "--source", help="Data set to translate (spec)."),
    out: Path = typer.Option(..., "--out", help="Output folder; keeps the input's layout and labels."),
    run: Path | None = typer.Option(None, "--run", help="A translate-train run folder."),
    method: str | None = typer.Option(None, help="Instead of --run, a method that trains nothing (fda)."),
    target: str | None = typer.Option(None, help="With --method: the target set (FDA takes its amplitudes)."),
    seed: int = typer.Option(0, help="With --method: seeds the target frame drawn for each source frame."),
    size: str | None = typer.Option(None, help="HxW, or 'full' for each frame's own size (default: the "
                                                "translator's training size; full for methods that do not train)."),
    direction: str = typer.Option("s2t", help="s2t (source->target) or t2s (target->source, CycleGAN's F)."),
    batch_size: int = typer.Option(4, help="Frames per forward pass."),
    workers: int = typer.Option(2, help="Decoding workers."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    amp: str = typer.Option("none", help="none, bf16 or fp16 (CUDA)."),
    overrides: list[str] = typer.Argument(None, help="With --method: its settings, e.g. model.beta=0.05."),
) -> None:
    """Translate a whole data set (skips frames already written). FDA output is clipped to 0..255."""
    from .translation.apply import apply_translator

    from .translation.methods import method as get_method

    translator, cfg = _translator(run, method, target, seed, overrides, device, amp)
    trains = get_method(cfg.method).TRAINS
    target_size = None if size == "full" else parse_size(size) or (tuple(cfg.data.size) if trains else None)
    r = apply_translator(translator, source, out, target_size, direction, batch_size, workers)
    typer.echo(f"translated {r['translated']} frames ({r['skipped']} already there), {r['labels']} labels -> {out}")


def _translator(run: Path | None, method: str | None, target: str | None, seed: int, overrides: list[str] | None,
                device: str, amp: str = "none"):
    """The translator of a run folder, or of a method that trains nothing, built from options."""
    from .config import load_config
    from .runtime import init_runtime
    from .translation.methods import method as get_method
    from .translation.train import TranslateConfig, load_translator

    if (run is None) == (method is None):
        raise UserError("give --run RUN (a translate-train run) or --method METHOD --target SPEC")
    if run is not None:
        if overrides:
            raise UserError("--run uses the run's saved settings: drop the key=value overrides")
        return load_translator(run, device, amp)
    if get_method(method).TRAINS:
        raise UserError(f"--method {method}: it needs training first ('i2iuda translate train'), then --run")
    if not target:
        raise UserError(f"--method {method}: give --target SPEC")
    cfg = load_config(TranslateConfig, None, list(overrides or []) + [f"method={method}", f"target={target}",
                                                                   f"seed={seed}"])
    return get_method(method).build(cfg, init_runtime(device, amp), 0, training=False).eval(), cfg


@translate_app.command("samples")
def translate_samples(
    run: Path = typer.Option(..., "--run", help="A translate-train run folder."),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    source: str | None = typer.Option(None, help="Source spec (default: the run's source)."),
    target: str | None = typer.Option(None, help="Target spec (default: the run's target)."),
    n: int = typer.Option(6, help="Frames per domain."),
    size: str | None = typer.Option(None, help="HxW (default: training size)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
) -> None:
    """Picture what a translator does (CycleGAN: source, G(source), F(G(source)), target, F(target),
    G(F(target)); FDA: source, the target whose amplitude it takes, the result)."""
    from .io import save_png
    from .translation.apply import sample_grid

    translator, cfg = _translator(run, None, None, 0, None, device)
    size_hw = parse_size(size) or tuple(cfg.data.size)
    save_png(out, sample_grid(translator, source or cfg.source, target or cfg.target, n, size_hw))
    typer.echo(f"wrote {out}")


@translate_app.command("score")
def translate_score(
    images: str = typer.Option(..., "--images", help="Spec of the frames to score, e.g. gta5:runs/x/translated/cyclegan:val."),
    target: str = typer.Option(..., "--target", help="Spec of the target frames they should look like."),
    n: int = typer.Option(500, help="Frames per side: a fixed seeded subset (compare FIDs only at equal N)."),
    cache: Path | None = typer.Option(None, help="Folder to cache Inception features in (e.g. the target's)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores here."),
) -> None:
    """KID (x 1000) and FID of frames against a target set, with the standard FID Inception
    network (installed by 'make fid-weights')."""
    from .fid import score
    from .io import write_json

    r = score(images, target, n, cache)
    std = f" ± {r['KID_std']:.2f}" if r["KID_std"] is not None else ""
    typer.echo(f"KID x1000 {r['KID']:.2f}{std}   FID {r['FID']:.2f}   (N = {r['N_fake']} vs {r['N_real']})")
    if json_out:
        write_json(json_out, r)


@segment_app.command("train")
def segment_train(
    out: Path = typer.Option(..., "--out", help="Run folder."),
    train: str | None = typer.Option(None, "--train", help="Labelled training data spec."),
    val: str | None = typer.Option(None, "--val", help="Source validation spec (model selection)."),
    config: Path | None = typer.Option(None, "--config", help="YAML config (see configs/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    overrides: list[str] = typer.Argument(None, help="Config overrides key=value, e.g. model.backbone=resnet18."),
) -> None:
    """Train DeepLab; validate on the source val split each epoch; keep the best by mIoU."""
    from .segmentation.train import resolve_config, train_segmenter

    cfg = resolve_config(out, config, _overrides(overrides, train=train, val=val), resume)
    s = train_segmenter(cfg, out, resume=resume)
    typer.echo(f"{s['steps']} steps in {s['wall_seconds']:.0f}s ({s['steps_per_second']} steps/s); "
               f"best source-val mIoU {s['best_val_mIoU']:.2f}; run folder: {out}")


@segment_app.command("adapt")
def segment_adapt(
    out: Path = typer.Option(..., "--out", help="Run folder."),
    train: str | None = typer.Option(None, "--train", help="Labelled source training data (raw or translated)."),
    val: str | None = typer.Option(None, "--val", help="Source validation spec (curves of student and teacher)."),
    target: str | None = typer.Option(None, "--target", help="Unlabelled target frames, e.g. cityscapes:/data/cityscapes:train."),
    config: Path | None = typer.Option(None, "--config", help="YAML config: segment train's settings (configs/segment_*.yaml) "
                                                                "plus target: and online: (segmentation/online.py)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    overrides: list[str] = typer.Argument(None, help="Config overrides, e.g. online.mic=true online.rare_class_sampling=true."),
) -> None:
    """Online self-training on the target: a student and its EMA teacher with ClassMix (DACS),
    optionally rare-class sampling (DAFormer) and masked image consistency (MIC). Keeps the last student."""
    from .segmentation.online import resolve_config, train_online

    cfg = resolve_config(out, config, _overrides(overrides, train=train, val=val, target=target), resume)
    s = train_online(cfg, out, resume=resume)
    last = s["history"][-1] if s["history"] else {}
    typer.echo(f"{s['steps']} steps in {s['wall_seconds']:.0f}s ({s['steps_per_second']} steps/s); source-val mIoU "
               f"student {last.get('mIoU', float('nan')):.2f}, teacher {last.get('teacher_mIoU', float('nan')):.2f}; "
               f"run folder: {out} (checkpoints/student.safetensors: the last student)")


def parse_scales(text: str) -> tuple[float, ...]:
    """--scales '0.75,1.0,1.25' -> (0.75, 1.0, 1.25)."""
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise UserError(f"--scales {text!r}: expected numbers separated by commas") from None


@segment_app.command("eval")
def segment_eval(
    run: Path = typer.Option(..., "--run", help="A segment train or adapt run folder (its best checkpoint, or last student)."),
    data: str = typer.Option(..., "--data", help="Labelled data spec, e.g. cityscapes:/data/cityscapes:val."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, the per-class table and pictures."),
    size: str | None = typer.Option(None, help="Input HxW (default: the training size); logits go to label size."),
    slide: str | None = typer.Option(None, help="Sliding-window HxW at full resolution instead of resizing."),
    flip: bool = typer.Option(False, "--flip", help="Average with the horizontally flipped frame."),
    scales: str = typer.Option("1.0", help="Comma list of test scales, e.g. 0.75,1.0,1.25."),
    classes: str = typer.Option("19", help="Classes in the means: 19, 16 or 13 (SYNTHIA protocols)."),
    save_predictions: bool = typer.Option(False, "--save-predictions", help="Write trainId PNGs of every frame."),
    pictures: int = typer.Option(8, help="Colour-coded predictions and overlays to write."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    workers: int = typer.Option(2, help="Decoding workers."),
    batch_size: int = typer.Option(4, help="Frames per forward pass (resized inputs; full-size frames go one by one)."),
) -> None:
    """Evaluate a trained model: PA, MPA, mIoU, FWIoU and per-class IoU over the whole set."""
    from .segmentation.evaluate import EvalProtocol, class_subset, run_eval

    scale_list = parse_scales(scales)
    class_subset(classes)
    protocol = EvalProtocol(parse_size(size), parse_size(slide, "--slide"), flip, scale_list, classes)
    r = run_eval(run, data, out, protocol, save_predictions, pictures, device, workers, batch_size=batch_size)
    typer.echo(r["table"])


@segment_app.command("predict")
def segment_predict(
    run: list[Path] = typer.Option(..., "--run", help="A segment-train run; give several to average their softmax "
                                                     "(FDA's multi-band ensemble)."),
    data: str = typer.Option(..., "--data", help="Data spec, labelled or not, e.g. cityscapes:/data/cityscapes:train."),
    out: Path = typer.Option(..., "--out", help="Folder for labels/, confidence/ and about.json (resumable)."),
    size: str | None = typer.Option(None, help="Input HxW (default: the training size); outputs at each frame's size."),
    flip: bool = typer.Option(False, "--flip", help="Average with the horizontally flipped frame."),
    scales: str = typer.Option("1.0", help="Comma list of test scales, e.g. 0.75,1.0,1.25."),
    confidence_bits: int = typer.Option(16, help="Confidence PNGs: 8 or 16 bit."),
    pseudo: float | None = typer.Option(None, "--pseudo-percentile", help="Also write pseudo-labels to OUT/pseudo: "
                                        "per class, pixels under this percentile of their confidence (capped at 0.9) "
                                        "are ignored (BDL 50, FDA 66)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
    workers: int = typer.Option(2, help="Decoding workers."),
    batch_size: int = typer.Option(8, help="Frames per forward pass."),
) -> None:
    """Predict trainId labels and confidences of any data set; optionally pseudo-labels (pseudo:OUT/pseudo)."""
    from .segmentation.evaluate import EvalProtocol
    from .segmentation.predict import predict, pseudo_labels

    scale_list = parse_scales(scales)
    predict(run, data, out, EvalProtocol(parse_size(size), None, flip, scale_list), confidence_bits, device, workers,
            batch_size)
    typer.echo(f"predictions: {out}/labels, confidences: {out}/confidence (read them as pseudo:{out})")
    if pseudo is not None:
        r = pseudo_labels(out, out / "pseudo", pseudo, progress=True)
        typer.echo(f"pseudo-labels: {out}/pseudo/labels ({100 * r['kept_fraction']:.1f}% of pixels kept; train on "
                   f"them with mix=pseudo:{out / 'pseudo'})")


@app.command("evaluate")
def evaluate_files(
    pred: Path = typer.Option(..., "--pred", help="Folder of prediction PNGs (trainIds), named like the images."),
    gt: str = typer.Option(..., "--gt", help="Labelled data spec, e.g. cityscapes:/data/cityscapes:val."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics here."),
    classes: str = typer.Option("19", help="Classes in the means: 19, 16 or 13."),
) -> None:
    """Score prediction files against a labelled data set (like cityscapesScripts)."""
    from .io import write_json
    from .segmentation.evaluate import evaluate_prediction_files, format_table

    r = evaluate_prediction_files(pred, gt, classes)
    typer.echo(format_table(r))
    if json_out:
        write_json(json_out, r)


DEFAULT_STUDY = Path(__file__).parent / "configs" / "study_synthetic_cpu.yaml"


def lanes_asked(config: Path, overrides: list[str]) -> int:
    """The study's ``lanes``, read ahead of its settings for ``lanes.prestart`` alone (1 where the
    file or an override does not read, or under torchrun: the full read says what is wrong)."""
    from .config import merge, parse_override, read_yaml_config

    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return 1
        data = read_yaml_config(config)
        for o in overrides:
            data = merge(data, parse_override(o))
        return int(data.get("lanes", 1))
    except (UserError, TypeError, ValueError):
        return 1


@app.command("run")
def run_cmd(
    config: Path | None = typer.Option(None, "--config", help="Study YAML (default: the synthetic CPU preset)."),
    out: Path = typer.Option(Path("runs/study"), "--out", help="Run folder."),
    from_stage: str | None = typer.Option(None, "--from", help="Redo this stage (e.g. segment:fda, or a kind: "
                                                                 "translate, apply, segment, look, evaluate, report) "
                                                                 "and all after it."),
    stop_after: str | None = typer.Option(None, "--stop-after", help="Stop after this stage (or kind)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Run the study once per seed (0,1,2 or 0-4) in "
                                                            "OUT/seed_S/ and aggregate: mean ± std, paired differences."),
    overrides: list[str] = typer.Argument(None, help="Config overrides key=value, e.g. seed=1 oracle=false."),
) -> None:
    """The whole study: every arm (source-only, one per translator, oracle) trained and evaluated on target val."""
    from .lanes import end_untaken, prestart

    # the lanes import torch and the stages' modules while this process imports the study's
    prestart(lanes_asked(config or DEFAULT_STUDY, overrides or []), warm=("i2iuda.study.run",))
    try:
        _run_study_cmd(config, out, from_stage, stop_after, seeds, overrides)
    finally:
        end_untaken()


def _run_study_cmd(config, out, from_stage, stop_after, seeds, overrides) -> None:
    from .config import load_config
    from .study import StudyConfig, results_table, run_study

    cfg = load_config(StudyConfig, config or DEFAULT_STUDY, list(overrides or []))
    if seeds is not None:
        from .study import parse_seeds, run_seeds, seeds_table

        if any(o.split("=")[0].strip() == "seed" for o in overrides or []):
            raise UserError("--seeds sets the seed of each run: drop the seed= override")
        metrics = run_seeds(cfg, out, parse_seeds(seeds), from_stage, stop_after)
        table = seeds_table
    else:
        metrics = run_study(cfg, out, from_stage, stop_after)
        table = results_table
    if metrics:
        typer.echo(table(metrics))
        typer.echo(f"report: {out / 'report.html'}")


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="One study run folder, or several to compare."),
    out: Path = typer.Option(Path("."), "--out", help="Where the comparison goes (several runs)."),
    check: bool = typer.Option(False, "--check", help="Open the page in headless Chromium; check every image loads."),
) -> None:
    """Rebuild RUN/report.html and report.md; with several runs, compare them side by side."""
    from .report import check_in_browser, compare_runs, read_metrics, write_seeds_report
    from .study import report

    for r in runs:
        if not (r / "metrics.json").is_file():
            raise UserError(f"{r}: no metrics.json (not a finished study run; run 'i2iuda run --out {r}')")
    if len(runs) == 1:
        several = str(read_metrics(runs[0] / "metrics.json").get("schema", "")).startswith("i2iuda.study.aggregate")
        md, html_path = (write_seeds_report if several else report)(runs[0])
        typer.echo(f"wrote {md} and {html_path}")
    else:
        html_path = compare_runs(runs, out)
        typer.echo(f"wrote {html_path}")
    if check:
        loaded, total = check_in_browser(html_path, screenshot=html_path.with_suffix(".png"))
        typer.echo(f"chromium: {loaded}/{total} images loaded; screenshot {html_path.with_suffix('.png')}")
        if loaded != total:
            raise UserError(f"{html_path}: {total - loaded} image(s) did not load")


@checkpoint_app.command("convert")
def checkpoint_convert(
    run: Path = typer.Argument(..., help="A run folder, or a study folder (every run inside it)."),
) -> None:
    """Rewrite an older run's checkpoints in the formats that load without unpickling (last.pt as
    plain data, best.safetensors, translator.safetensors). This UNPICKLES the old files, which can
    run code: only for runs you trust. Other commands never unpickle."""
    import yaml

    from .checkpoint import convert_folder
    from .runlock import holding
    from .translation.train import export_weights

    if not run.is_dir():
        raise UserError(f"{run}: not a folder")
    folders = sorted({p for p in run.rglob("checkpoints") if p.is_dir()})
    if not folders:
        raise UserError(f"{run}: no checkpoints/ folder inside")
    with holding(run):
        for ckpts in folders:
            for line in convert_folder(ckpts):
                typer.echo(line)
            saved = ckpts.parent / "config.yaml"
            cfg = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
            is_translator = isinstance(cfg, dict) and "source" in cfg and "target" in cfg and "train" not in cfg
            if is_translator and (ckpts / "last.pt").is_file() and not (ckpts / "translator.safetensors").is_file():
                typer.echo(f"{export_weights(ckpts.parent)}: written from last.pt")
    typer.echo(f"{run}: checkpoints load without unpickling now")


def main() -> None:
    """Run the CLI: a bad input (UserError, or a wrong option or type that the parser finds) is one
    line on stderr and exit code 2; ``--debug`` shows the traceback instead. Library warnings are
    logged (shown with --verbose), not printed between a command's lines."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.INFO)  # shown at --verbose, not by default
    try:
        app(standalone_mode=False)
    except typer.Exit as e:  # a command that ends early on purpose
        sys.exit(e.exit_code)
    except typer.Abort:
        print("i2iuda: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as e:  # the parser's: an unknown option, a wrong type, a missing value
        if _state["debug"]:
            raise
        message = " ".join(e.format_message().split())
        if message:  # (none: a group called without a command, whose help the parser printed)
            command = getattr(getattr(e, "ctx", None), "command_path", "").partition(" ")[2]
            print(f"i2iuda: error: {command + ': ' if command else ''}{message}", file=sys.stderr)
        sys.exit(2)
    except UserError as e:
        if _state["debug"]:
            raise
        print(f"i2iuda: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("i2iuda: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
