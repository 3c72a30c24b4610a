"""The study's report: RUN/report.md and RUN/report.html (one self-contained file: images are
inlined as data URIs, so it opens offline), with pictures in RUN/figures/.

Contents: the config in brief; translation samples; a failure-case gallery of translated
frames ranked by how much translation changed their meaning; the results table and the gap
closed; per-class IoU (bar chart and table with adapted - source-only); training curves; the
same target val frames with each model's prediction.
"""
from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .data import labels as L  # noqa: E402
from .io import atomic_write_text, save_png  # noqa: E402
from .pictures import grid  # noqa: E402

NICE = {"source_only": "source-only", "adapted": "adapted", "oracle": "oracle (upper bound)"}


def _models(run: Path) -> list[str]:
    return [m for m in ("source_only", "adapted", "oracle") if (run / m / "checkpoints" / "best.pt").exists()]


def failure_cases(run: Path, n_frames: int = 200, k: int = 6) -> tuple[np.ndarray | None, list[dict]]:
    """Translated source frames where translation changed the meaning most: lowest agreement
    (pixel accuracy) between the *source* label and what a judge model (the oracle if trained,
    else source-only) sees in the translated frame."""
    from .config import load_config
    from .data.datasets import build_index, load_pair
    from .data.transforms import eval_transform
    from .experiment import StudyConfig, translated_specs
    from .segmentation.evaluate import predict_logits
    from .segmentation.train import load_trained

    cfg = load_config(StudyConfig, run / "config.yaml")
    judge_name = "oracle" if (run / "oracle" / "checkpoints" / "best.pt").exists() else "source_only"
    judge, jcfg = load_trained(run / judge_name, torch.device("cpu"))
    _, t_val = translated_specs(cfg, run)
    index = build_index(t_val)
    tf = eval_transform(tuple(jcfg["data"]["size"]))
    rows = []
    for s in index.samples[:n_frames]:
        image, label = load_pair(s, index.label_format)
        x = tf(image, None)[0][None]
        pred = predict_logits(judge, x, label.shape).argmax(1)[0].numpy().astype(np.uint8)
        valid = label != L.IGNORE
        rows.append({"name": s.rel, "agreement": float((pred == label)[valid].mean() * 100), "image": image,
                     "label": label, "pred": pred})
    rows.sort(key=lambda r: r["agreement"])
    worst = rows[:k]
    if not worst:
        return None, []
    src_root = Path(build_index(cfg.data.source_val.format(root=cfg.data.synthetic_root or "")).root)
    pics = []
    for r in worst:
        from .data.datasets import read_image

        src = read_image(src_root / r["name"]) if (src_root / r["name"]).exists() else r["image"]
        pics.append([src, r["image"], L.overlay(r["image"], r["label"]), L.overlay(r["image"], r["pred"])])
    picture = grid(pics, height=worst[0]["image"].shape[0],
                   captions=["source", "translated", "source label", f"{NICE[judge_name]} sees"])
    mean = float(np.mean([r["agreement"] for r in rows]))
    return picture, [{"name": r["name"], "agreement": r["agreement"]} for r in worst] + [
        {"name": f"mean over {len(rows)} frames (judge: {NICE[judge_name]})", "agreement": mean}]


def prediction_grid(run: Path, target_val: str, n: int = 4) -> np.ndarray:
    """The same target val frames with each model's prediction overlaid."""
    from .data.datasets import build_index, load_pair
    from .data.transforms import eval_transform
    from .segmentation.evaluate import predict_logits
    from .segmentation.train import load_trained

    index = build_index(target_val)
    models = {m: load_trained(run / m, torch.device("cpu")) for m in _models(run)}
    rows = []
    for s in index.samples[:n]:
        image, label = load_pair(s, index.label_format)
        row = [image, L.overlay(image, label)]
        for m, (net, mcfg) in models.items():
            x = eval_transform(tuple(mcfg["data"]["size"]))(image, None)[0][None]
            pred = predict_logits(net, x, label.shape).argmax(1)[0].numpy().astype(np.uint8)
            row.append(L.overlay(image, pred))
        rows.append(row)
    return grid(rows, captions=["target frame", "ground truth"] + [NICE[m] for m in models])


def per_class_chart(metrics: dict, path: Path) -> None:
    models = metrics["models"]
    names = list(next(iter(models.values()))["per_class_IoU"])
    x = np.arange(len(names))
    w = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    colors = {"source_only": "#9e9e9e", "adapted": "#1e88e5", "oracle": "#43a047"}
    for i, (m, v) in enumerate(models.items()):
        vals = [v["per_class_IoU"][c] if v["per_class_IoU"][c] is not None else 0 for c in names]
        ax.bar(x + (i - (len(models) - 1) / 2) * w, vals, w, label=NICE[m], color=colors.get(m))
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def training_curves(run: Path, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), dpi=100)
    for m in _models(run):
        hist = json.loads((run / m / "history.json").read_text()) if (run / m / "history.json").exists() else []
        if hist:
            axes[0].plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], marker="o", label=NICE[m])
            axes[1].plot([h["epoch"] for h in hist], [h["mIoU"] for h in hist], marker="o", label=NICE[m])
    axes[0].set_title("segmentation train loss")
    axes[1].set_title("validation mIoU (model selection)")
    for ax in axes[:2]:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _cyclegan_curves(run / "translate" / "tb", axes[2])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cyclegan_curves(tb: Path, ax) -> None:
    ax.set_title("CycleGAN losses")
    ax.set_xlabel("step")
    if not tb.exists():
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # a resumed run re-logs the steps after its last checkpoint and the reader drops the old
    # ones (purge_step); that is expected, so keep its warning about it out of the console
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = EventAccumulator(str(tb))
    acc.Reload()
    for tag in ("loss/G_gan", "loss/F_gan", "loss/cycle_s", "loss/cycle_t", "loss/D_T", "loss/D_S"):
        if tag in acc.Tags().get("scalars", []):
            ev = acc.Scalars(tag)
            ax.plot([e.step for e in ev], [e.value for e in ev], label=tag.split("/")[1])
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)


def write_report(run: str | Path) -> tuple[Path, Path]:
    """Build RUN/report.md and RUN/report.html from what the study wrote."""
    from .config import load_config
    from .experiment import StudyConfig, specs
    from .translation.apply import sample_grid
    from .translation.cyclegan import patch_size

    run = Path(run).resolve()
    cfg = load_config(StudyConfig, run / "config.yaml")
    metrics = json.loads((run / "metrics.json").read_text())
    s = specs(cfg)
    figs = run / "figures"
    figs.mkdir(exist_ok=True)
    pictures = {}
    if (run / "translate" / "checkpoints" / "last.pt").exists():
        save_png(figs / "translation_samples.png", sample_grid(run / "translate", s["source_val"], s["target_train"], n=4))
        pictures["translation"] = "figures/translation_samples.png"
    fail_pic, fail_rows = failure_cases(run)
    if fail_pic is not None:
        save_png(figs / "failure_cases.png", fail_pic)
        pictures["failures"] = "figures/failure_cases.png"
    per_class_chart(metrics, figs / "per_class_iou.png")
    training_curves(run, figs / "training_curves.png")
    save_png(figs / "predictions.png", prediction_grid(run, s["target_val"]))

    models = metrics["models"]
    tm, td = cfg.translate.model, cfg.translate.data
    spe = cfg.translate.steps_per_epoch  # None on real data: an epoch is one pass over the larger domain
    length = f"{cfg.translate.epochs * spe} steps" if spe else f"{cfg.translate.epochs} epochs"
    patch = patch_size(tm.d_layers)
    md = [f"# i2iuda study: {run.name}", "",
          "## Setup", "",
          f"- source train / val: `{s['source_train']}` / `{s['source_val']}`",
          f"- target train (unlabelled for translation) / val: `{s['target_train']}` / `{s['target_val']}`",
          f"- translator: CycleGAN ngf={tm.ngf}, {tm.n_blocks} blocks, {patch}x{patch} PatchGAN, identity loss "
          f"{'on' if tm.identity else 'off'}, {length} at batch {td.batch_size}, size {td.size[0]}x{td.size[1]}",
          f"- segmenter: {cfg.segment.model.arch}-{cfg.segment.model.backbone}, {cfg.segment.epochs} epochs, size "
          f"{cfg.segment.data.size[0]}x{cfg.segment.data.size[1]}, selected on source val mIoU", f"- seed {cfg.seed}", "",
          "## Results on the target val set", "", "| model | PA | MPA | mIoU | FWIoU |", "|---|---|---|---|---|"]
    for m, v in models.items():
        md.append(f"| {NICE[m]} | {v['PA']:.2f} | {v['MPA']:.2f} | {v['mIoU']:.2f} | {v['FWIoU']:.2f} |")
    md.append("")
    if metrics.get("gap_closed") is not None:
        md.append(f"**Gap closed** = (adapted − source-only) / (oracle − source-only) = "
                  f"**{100 * metrics['gap_closed']:.1f}%** (the oracle is trained on target labels: an upper bound, "
                  f"not a UDA result).")
    md.append(f"\nadapted − source-only: **{metrics['delta_mIoU_adapted_minus_source_only']:+.2f} mIoU**\n")
    md += ["## Per-class IoU", "", "![per-class IoU](figures/per_class_iou.png)", "",
           "| class | source-only | adapted | adapted − source-only |" + (" oracle |" if "oracle" in models else ""),
           "|---|---|---|---|" + ("---|" if "oracle" in models else "")]
    f = lambda v: "n/a" if v is None else f"{v:.1f}"
    for c in models["source_only"]["per_class_IoU"]:
        a, b = models["source_only"]["per_class_IoU"][c], models["adapted"]["per_class_IoU"][c]
        d = "n/a" if a is None or b is None else f"{b - a:+.1f}"
        row = f"| {c} | {f(a)} | {f(b)} | {d} |"
        if "oracle" in models:
            row += f" {f(models['oracle']['per_class_IoU'][c])} |"
        md.append(row)
    md += ["", "Classes absent from both the ground truth and the predictions are n/a and left out of the means.", ""]
    if "translation" in pictures:
        md += ["## Translation samples", "", "Rows: source val frame, G(source), F(G(source)), a target frame, "
               "F(target), G(F(target)).", "", f"![translation]({pictures['translation']})", ""]
    if "failures" in pictures:
        md += ["## Failure cases: where translation changed the meaning", "",
               "Translated source val frames ranked by the agreement (pixel accuracy) between the source label and "
               "what a model sees in the translated frame; the lowest first. Low agreement means the translator "
               "painted one class as another (e.g. hallucinated an ego-vehicle hood or erased small objects), so "
               "the source labels no longer describe the translated frame.", "",
               f"![failure cases]({pictures['failures']})", "", "| frame | agreement (%) |", "|---|---|"]
        md += [f"| {r['name']} | {r['agreement']:.1f} |" for r in fail_rows] + [""]
    md += ["## Training curves", "", "![training curves](figures/training_curves.png)", "",
           "## Predictions on target val frames", "", "![predictions](figures/predictions.png)", ""]
    text = "\n".join(md)
    md_path, html_path = run / "report.md", run / "report.html"
    atomic_write_text(md_path, text)
    atomic_write_text(html_path, markdown_to_html(text, run, title=f"i2iuda study: {run.name}"))
    return md_path, html_path


def _inline(src: str, base: Path) -> str:
    p = base / src
    if p.is_file():
        return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
    return src


def markdown_to_html(text: str, base: Path, title: str) -> str:
    """The small Markdown subset the report uses (headings, lists, tables, images, bold, code)
    -> one self-contained HTML page with inlined images."""
    import re

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
        return s

    out, table = [], []

    def flush_table():
        if table:
            head, *body = [r for r in table if not set(r.replace("|", "").strip()) <= set("-")]
            cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells(head)) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells(r)) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if m := re.match(r"!\[(.*?)\]\((.+?)\)", line):
            out.append(f'<figure><img alt="{html.escape(m[1])}" src="{_inline(m[2], base)}"></figure>')
        elif m := re.match(r"(#+) (.*)", line):
            out.append(f"<h{len(m[1])}>{inline(m[2])}</h{len(m[1])}>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}")
    # After load, the page records how many of its images decoded: a headless browser's DOM dump
    # then shows data-images-loaded="N/M" on <body> (see check_in_browser).
    script = ("<script>window.addEventListener('load',function(){var i=document.images,n=0;"
              "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}"
              "document.body.setAttribute('data-images-loaded',n+'/'+i.length);});</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + f"\n{script}\n</body></html>\n")


def check_in_browser(page: Path, screenshot: Path | None = None, browser: str = "chromium") -> tuple[int, int]:
    """Open ``page`` in headless Chromium (fresh profile, no network) and return (images that
    loaded, images on the page); optionally save a full-page screenshot."""
    import re
    import shutil
    import subprocess
    import tempfile

    from .errors import UserError

    exe = shutil.which(browser)
    if exe is None:
        raise UserError(f"{browser} not found (Debian: apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=10000"]
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
        if screenshot is not None:
            subprocess.run([exe, *flags, f"--user-data-dir={profile}", "--window-size=1200,5200",
                            "--hide-scrollbars", f"--screenshot={Path(screenshot).resolve()}", url],
                           capture_output=True, timeout=120)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    if not m:
        raise UserError(f"{page}: the browser did not finish loading the page")
    return int(m[1]), int(m[2])


def compare_runs(runs: list[Path], out: Path) -> Path:
    """``i2iuda report RUN_A RUN_B ...``: the runs' results side by side (out/comparison.{md,html})."""
    md = ["# i2iuda: runs compared", "", "| run | model | PA | MPA | mIoU | FWIoU | gap closed |",
          "|---|---|---|---|---|---|---|"]
    for r in runs:
        m = json.loads((Path(r) / "metrics.json").read_text())
        gap = "" if m.get("gap_closed") is None else f"{100 * m['gap_closed']:.1f}%"
        for name, v in m["models"].items():
            md.append(f"| {Path(r).name} | {NICE[name]} | {v['PA']:.2f} | {v['MPA']:.2f} | {v['mIoU']:.2f} | "
                      f"{v['FWIoU']:.2f} | {gap if name == 'adapted' else ''} |")
    text = "\n".join(md) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", text)
    atomic_write_text(out / "comparison.html", markdown_to_html(text, out, "i2iuda: runs compared"))
    return out / "comparison.html"
