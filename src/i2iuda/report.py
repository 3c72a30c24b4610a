"""The study's report: RUN/report.md and RUN/report.html (one self-contained page: images are
inlined as data URIs, so it opens offline), with charts in RUN/figures/.

The report reads files only, never models: RUN/study.json (the arms and setup), metrics.json,
the pictures the stages made where the models were (eval/ARM/pictures/), the segmenters'
history.json and the translators' losses.jsonl. So ``i2iuda report RUN`` is quick anywhere, with
the checkpoints deleted too. It knows no arm kind: each arm's section (what its translator does,
its failure gallery, its pseudo-labels, ...) is written by its kind (study/arms/), from files too,
and handed in.

Contents: the setup; every arm ranked by mIoU with gap closed; per-class IoU (chart and table
with each arm minus source-only); the arms' sections; training curves; target val frames with
every arm's prediction; stage times.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jinja2
import markdown
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from PIL import Image  # noqa: E402

from .errors import UserError  # noqa: E402
from .io import atomic_write_text, read_json, save_png  # noqa: E402
from .pictures import grid  # noqa: E402

BOUND_COLOURS = {"lower": "#9e9e9e", "upper": "#43a047"}  # source-only grey, the oracle green
ARM_COLOURS = ["#1e88e5", "#e53935", "#8e24aa", "#fb8c00", "#00897b", "#6d4c41", "#3949ab", "#c0ca33"]

PAGE = jinja2.Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:0 3px}
</style></head>
<body>
{{ body }}
<script>
// After load, the page records how many of its images decoded: a headless browser's DOM dump
// then shows data-images-loaded="N/M" on <body> (see check_in_browser).
window.addEventListener('load', function () {
  var i = document.images, n = 0;
  for (var k = 0; k < i.length; k++) { if (i[k].complete && i[k].naturalWidth > 0) n++; }
  document.body.setAttribute('data-images-loaded', n + '/' + i.length);
});
</script>
</body></html>
""", autoescape=False)  # body is HTML that Python-Markdown made from our own text


def nice(arm: str, bound: str | None = None) -> str:
    """An arm's name as the report shows it: source-only, the oracle marked as an upper bound."""
    return arm.replace("_", "-") if bound == "lower" else f"{arm} (upper bound)" if bound == "upper" else arm


def read_metrics(path: Path) -> dict:
    """A study's metrics.json (one seed's, or the aggregate of several), as the current schema
    reads (``upgraded``); one line naming the file where it does not read as one."""
    m = read_json(path)
    arms = m.get("arms") if isinstance(m, dict) else None
    rows_ok = isinstance(arms, dict) and arms and all(
        isinstance(r, dict) and isinstance(r.get("kind"), str) and isinstance(r.get("per_class_IoU"), dict)
        and all(isinstance(r.get(k), (int, float, dict)) for k in ("PA", "MPA", "mIoU", "FWIoU")) for r in arms.values())
    if not rows_ok or not isinstance(m.get("ranking"), list):
        raise UserError(f"{path}: not a study's metrics (no arms with PA, MPA, mIoU, FWIoU and per-class IoU): the "
                        f"file is damaged or from elsewhere; rebuild it with 'i2iuda run --out {path.parent} --from report'")
    return upgraded(m)


def read_study(path: Path) -> dict:
    """A study's study.json; one line naming the file where it does not read as one."""
    s = read_json(path)
    ok = isinstance(s, dict) and isinstance(s.get("specs"), dict) and isinstance(s.get("arms"), list) and all(
        isinstance(a, dict) and all(isinstance(a.get(k), str) for k in ("name", "kind", "segment", "eval"))
        for a in s["arms"])
    if not ok:
        raise UserError(f"{path}: not a study's study.json (no arms with name, kind and folders): the file is damaged; "
                        f"rebuild it with 'i2iuda run --out {path.parent} --from report'")
    return s


def upgraded(metrics: dict) -> dict:
    """metrics.json of any schema as the current one reads: rows of i2iuda.study.metrics/2 (and its
    aggregates) had no ``bound`` and a gap closed for the two ends of the gap too."""
    if all("bound" in r for r in metrics["arms"].values()):
        return metrics
    ends = {"source_only": "lower", "oracle": "upper"}  # the two kinds that were the ends, by name
    rows = {}
    for name, r in metrics["arms"].items():
        bound = ends.get(r["kind"])
        rows[name] = {**r, "bound": bound, **({"gap_closed": None} if bound else {})}
    return {**metrics, "arms": rows}


def ranked_arms(metrics: dict) -> list[str]:
    """The arms in display order: ranked by mIoU, then the upper bound (the oracle: not ranked)."""
    return metrics["ranking"] + [a for a, r in metrics["arms"].items() if r["bound"] == "upper"]


def baseline(metrics: dict) -> str:
    """The arm every other one is compared with: source-only."""
    return next(a for a, r in metrics["arms"].items() if r["bound"] == "lower")


def colours(rows: dict[str, dict]) -> dict[str, str]:
    others = iter(ARM_COLOURS * 4)
    return {a: BOUND_COLOURS.get(r.get("bound")) or next(others) for a, r in rows.items()}


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def labels(metrics: dict) -> dict[str, str]:
    """Every arm's name as shown (``nice``), from its row's bound."""
    return {a: nice(a, r["bound"]) for a, r in metrics["arms"].items()}


def per_class_chart(metrics: dict, path: Path) -> None:
    class_bars({a: v["per_class_IoU"] for a, v in metrics["arms"].items()}, metrics, path)


def class_bars(values: dict[str, dict[str, float | None]], metrics: dict, path: Path,
               errors: dict[str, dict[str, float | None]] | None = None) -> None:
    """Per-class IoU bars of every arm (``values[arm][class]``), with error bars if given."""
    names = list(next(iter(values.values())))
    x = np.arange(len(names))
    w = 0.8 / len(values)
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    col, label = colours(metrics["arms"]), labels(metrics)
    for i, (a, v) in enumerate(values.items()):
        vals = [v[c] if v[c] is not None else 0 for c in names]
        err = [errors[a][c] or 0 for c in names] if errors else None
        ax.bar(x + (i - (len(values) - 1) / 2) * w, vals, w, yerr=err, label=label[a], color=col[a],
               error_kw={"elinewidth": 0.8, "capsize": 1.5})
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(ncol=min(len(values), 5), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def read_losses(path: Path) -> list[dict]:
    """The lines of a losses.jsonl (a line cut short by a kill is left out)."""
    out = []
    for ln in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out


def training_curves(run: Path, study: dict, metrics: dict, path: Path) -> None:
    """Segmenters (train loss, source-val mIoU per epoch) and each training translator's losses."""
    translators = [a for a in study["arms"] if a.get("translate") and (run / a["translate"] / "losses.jsonl").is_file()]
    fig, axes = plt.subplots(1, 2 + len(translators), figsize=(5 * (2 + len(translators)), 3.4), dpi=100,
                             squeeze=False)
    axes = axes[0]
    col, label = colours(metrics["arms"]), labels(metrics)
    for a in study["arms"]:
        hist = read_json(run / a["segment"] / "history.json", [])
        if hist:
            epochs = [h["epoch"] for h in hist]
            axes[0].plot(epochs, [h["train_loss"] for h in hist], marker="o", label=label[a["name"]], color=col[a["name"]])
            axes[1].plot(epochs, [h["mIoU"] for h in hist], marker="o", label=label[a["name"]], color=col[a["name"]])
    axes[0].set_title("segmentation train loss")
    axes[1].set_title("validation mIoU (model selection)")
    for ax in axes[:2]:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax, a in zip(axes[2:], translators):
        lines = [ln for ln in read_losses(run / a["translate"] / "losses.jsonl") if any(k.startswith("loss/") for k in ln)]
        keys = [k for k in lines[0] if k.startswith("loss/") and not k.endswith("total")] if lines else []
        for k in keys:
            ax.plot([ln["step"] for ln in lines], [ln.get(k) for ln in lines], label=k[5:])
        ax.set_title(f"{a['name']}: translator losses")
        ax.set_xlabel("step")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def prediction_grid(run: Path, study: dict, metrics: dict) -> np.ndarray | None:
    """The target val frames that evaluation pictured, with every arm's prediction beside them."""
    first = run / study["arms"][0]["eval"] / "pictures"
    stems = sorted(p.name[: -len("_image.png")] for p in first.glob("*_image.png"))[:4]
    if not stems:
        return None
    rows = []
    for stem in stems:
        row = [read_image(first / f"{stem}_image.png"), read_image(first / f"{stem}_truth.png")]
        for a in study["arms"]:
            p = run / a["eval"] / "pictures" / f"{stem}_prediction.png"
            row.append(read_image(p) if p.is_file() else np.full_like(row[0], 255))
        rows.append(row)
    label = labels(metrics)
    return grid(rows, captions=["target frame", "ground truth"] + [label[a["name"]] for a in study["arms"]])


def write_report(run: str | Path, sections: dict[str, list[str]] | None = None) -> tuple[Path, Path]:
    """Build RUN/report.md and RUN/report.html from what the study wrote; ``sections``: markdown
    lines of each arm's own section (study/arms/), shown after the per-class table, in arm order."""
    run = Path(run).resolve()
    if not (run / "study.json").is_file() or not (run / "metrics.json").is_file():
        raise UserError(f"{run}: no study.json/metrics.json (not a finished study run; run 'i2iuda run --out {run}')")
    study, metrics = read_study(run / "study.json"), read_metrics(run / "metrics.json")
    figs = run / "figures"
    figs.mkdir(exist_ok=True)
    per_class_chart(metrics, figs / "per_class_iou.png")
    training_curves(run, study, metrics, figs / "training_curves.png")
    predictions = prediction_grid(run, study, metrics)
    if predictions is not None:
        save_png(figs / "predictions.png", predictions)
    rows, label, base_arm = metrics["arms"], labels(metrics), baseline(metrics)
    s = study["specs"]
    md = [f"# i2iuda study: {study['name']}", "", "## Setup", "",
          f"- source train / val: `{s['source_train']}` / `{s['source_val']}`",
          f"- target train (unlabelled) / val: `{s['target_train']}` / `{s['target_val']}`",
          f"- segmenter: {study['segmenter']}", f"- seed {study['seed']}"]
    md += [f"- arm **{a['name']}**: {a['description']}" for a in study["arms"] if a.get("description")]
    md += ["", "## Results on the target val set", "",
           "Arms ranked by mIoU. Gap closed = (arm − source-only) / (oracle − source-only); the oracle is trained "
           "on target labels: an upper bound, not a UDA result.", "",
           "| arm | PA | MPA | mIoU | FWIoU | mIoU − source-only | gap closed |", "|---|---|---|---|---|---|---|"]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for name in ranked_arms(metrics):
        v = rows[name]
        delta = f"{v['delta_mIoU']:+.2f}" if name != base_arm else ""
        md.append(f"| {label[name]} | {v['PA']:.2f} | {v['MPA']:.2f} | {v['mIoU']:.2f} | {v['FWIoU']:.2f} | "
                  f"{delta} | {pct(v['gap_closed'])} |")
    md += translation_quality(rows, lambda v, k=1.0, d=2: "" if v is None else f"{k * v:.{d}f}")
    names = list(rows)
    md += ["", "## Per-class IoU", "", "![per-class IoU](figures/per_class_iou.png)", "",
           "| class | " + " | ".join(label[n] for n in names) + " |", "|---|" + "---|" * len(names)]
    f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    for c in rows[base_arm]["per_class_IoU"]:
        base = rows[base_arm]["per_class_IoU"][c]
        cells = []
        for n in names:
            v = rows[n]["per_class_IoU"][c]
            d = f" ({v - base:+.1f})" if n != base_arm and v is not None and base is not None else ""
            cells.append(f(v) + d)
        md.append(f"| {c} | " + " | ".join(cells) + " |")
    md += ["", "In brackets: the arm minus source-only. Classes absent from both the ground truth and the "
           "predictions are n/a and left out of the means.", ""]
    for a in study["arms"]:
        md += (sections or {}).get(a["name"], [])
    md += ["## Training curves", "", "![training curves](figures/training_curves.png)", ""]
    if predictions is not None:
        md += ["## Predictions on target val frames", "", "![predictions](figures/predictions.png)", ""]
    if study.get("stage_seconds"):
        rss = study.get("stage_peak_rss_mb") or {}
        md += ["## Stage times", "", "| stage | seconds | peak memory so far (MB) |", "|---|---|---|"]
        md += [f"| {k} | {v:.1f} | {rss.get(k) or ''} |" for k, v in study["stage_seconds"].items()] + [""]
    text = "\n".join(md)
    md_path, html_path = run / "report.md", run / "report.html"
    atomic_write_text(md_path, text)
    atomic_write_text(html_path, to_html(text, run, title=f"i2iuda study: {study['name']}"))
    return md_path, html_path


def translation_quality(rows: dict, fmt) -> list[str]:
    """The table of how target-like each arm's training frames are (source-only: raw source, the
    floor), from metrics.json's ``translation`` rows; ``fmt(value, scale, digits)`` formats a
    number (one seed) or a summary (mean ± std over seeds)."""
    scored = [a for a, r in rows.items() if r.get("translation")]
    if not scored:
        return []
    first = lambda key: next((rows[a]["translation"][key] for a in scored  # noqa: E731
                              if rows[a]["translation"].get(key) is not None), None)
    jnd = first("cast_jnd")  # appearance.CAST_JND, as the look stage wrote it (a constant: its seeds' mean)
    jnd = jnd.get("mean") if isinstance(jnd, dict) else jnd
    n = first("N")
    out = ["", "## Translation quality", "",
           "How target-like the source val frames each arm trains on are: raw for source-only (the floor), "
           "translated for the others. **KID** (× 1000, unbiased; the primary measure) and **FID** against target "
           "train frames with the standard FID Inception network, "
           + (f"{n[0]} frames against {n[1]} (FID is biased upwards at small N: compare FIDs at equal N only). "
              if n else "not computed in this run (`eval.kid_fid: N` turns them on). ")
           + "**FCN-score**: the oracle segmenter, trained on *target labels*, on these frames against their source "
           "labels (Isola et al.): a diagnostic that uses labels no UDA user has, never used to select anything. "
           "(FCN-score PA is what the failure gallery ranks frames by, pooled over all frames.) "
           "Lower KID/FID and higher FCN-score mean more target-like frames that keep their labels' meaning. "
           "**Checkerboard** (dB; appearance.py): the spectral peaks at the periods of the generator's up-sampling "
           "against their neighbourhood (the target's own frames give the floor: "
           + (f"{fmt(first('target_checkerboard_db'))} dB). " if first("target_checkerboard_db") is not None else "–). ")
           + "**Cast**: the distance of the frames' mean a\\*b\\* colour from the target's (CIE Lab; the target's own val "
           "frames: " + fmt(first("target_val_cast"))
           + (f"; from about {jnd:g}, one just-noticeable difference, a cast is visible" if jnd is not None else "")
           + "), **chroma**: their "
           "mean saturation's difference. "
           + ("**Class cast**: per class, the distance of its mean a\\*b\\* colour from the same class's in the "
              "target val frames, weighted by its share of the pixels (it reads *target val labels*; the target's own "
              f"train frames: {fmt(first('target_train_class_cast')) or '–'}): unlike the cast of the whole frames, it "
              "shows a translator that left each class in the source's colours when the domains' layouts differ. "
              if first("class_cast") is not None else "")
           + "**Edges kept**: the correlation of each translated frame's luminance "
           "edges with its source frame's, averaged (1 = the same edges; smeared edges and streaks lower it). "
           "**Flips**: the mean share of a class's pixels read as another class after "
           "translation, by the judge against the source labels (with the oracle: needs target labels) and by "
           "source-only against its own reading of the source frame (label-free).", "",
           "| arm | KID × 1000 | FID | FCN-score mIoU | FCN-score PA | checkerboard (dB) | cast | chroma | class cast "
           "| edges kept | flips (%) | flips, label-free (%) | translator training (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in scored:
        t, r = rows[a]["translation"], rows[a]
        raw = " (raw source)" if r["bound"] == "lower" else ""
        out.append(f"| {nice(a, r['bound'])}{raw} | {fmt(t.get('KID'))} | {fmt(t.get('FID'), d=1)} | "
                   f"{fmt(t.get('fcn_score_mIoU'))} | {fmt(t.get('fcn_score_PA'))} | {fmt(t.get('checkerboard_db'))} | "
                   f"{fmt(t.get('cast'))} | {fmt(t.get('chroma_shift'))} | {fmt(t.get('class_cast'))} | {fmt(t.get('edges_kept'))} | "
                   f"{fmt(r.get('flips_mean'), d=1)} | "
                   f"{fmt(r.get('flips_label_free_mean'), d=1)} | {fmt(r.get('translator_seconds'), d=0)} |")
    return out


def seeds_chart(metrics: dict, path: Path) -> None:
    """mIoU per arm over seeds: the mean (bar), the sample std (error bar) and every seed (dots)."""
    arms = ranked_arms(metrics)
    col, label = colours(metrics["arms"]), labels(metrics)
    fig, ax = plt.subplots(figsize=(1.6 * len(arms) + 2, 3.4), dpi=100)
    for i, a in enumerate(arms):
        m = metrics["arms"][a]["mIoU"]
        ax.bar(i, m["mean"], 0.6, yerr=m["std"], color=col[a], alpha=0.8, capsize=4)
        ax.scatter([i + 0.12 * (k - (len(m["values"]) - 1) / 2) for k in range(len(m["values"]))], m["values"],
                   color="black", s=12, zorder=3)
    ax.set_xticks(range(len(arms)), [label[a] for a in arms], rotation=20, ha="right")
    ax.set_ylabel("target val mIoU (%)")
    ax.set_title(f"{len(metrics['seeds'])} seeds: mean ± std, dots = seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_seeds_report(run: str | Path) -> tuple[Path, Path]:
    """RUN/report.{md,html} of a multi-seed study (RUN/metrics.json, schema aggregate/1): the
    aggregate first, then the paired differences, per-class spread and links to every seed."""
    run = Path(run).resolve()
    m = read_metrics(run / "metrics.json")
    figs = run / "figures"
    figs.mkdir(exist_ok=True)
    seeds_chart(m, figs / "seeds_miou.png")
    rows, label, base_arm = m["arms"], labels(m), baseline(m)
    class_bars({a: {c: (v or {}).get("mean") for c, v in r["per_class_IoU"].items()} for a, r in rows.items()}, m,
               figs / "per_class_iou.png",
               {a: {c: (v or {}).get("std") for c, v in r["per_class_IoU"].items()} for a, r in rows.items()})
    n = len(m["seeds"])
    ms = lambda s, k=1.0: "" if s is None else f"{k * s['mean']:.2f} ± {k * s['std']:.2f}"  # noqa: E731
    md = [f"# i2iuda study over {n} seeds: {run.name}", "",
          f"Seeds {', '.join(map(str, m['seeds']))}, each a whole study on the same data "
          f"({', '.join(f'[seed {s}](seed_{s}/report.html)' for s in m['seeds'])}). "
          f"Mean ± sample standard deviation over seeds; target val `{m['target_val']}`, {m['classes']} classes.", "",
          "## Results", "", "![mIoU over seeds](figures/seeds_miou.png)", "",
          "| arm | mIoU | min – max | PA | MPA | FWIoU | mIoU − source-only | gap closed (%) |",
          "|---|---|---|---|---|---|---|---|"]
    for name in ranked_arms(m):
        r = rows[name]
        md.append(f"| {label[name]} | {ms(r['mIoU'])} | {r['mIoU']['min']:.2f} – {r['mIoU']['max']:.2f} | "
                  f"{ms(r['PA'])} | {ms(r['MPA'])} | {ms(r['FWIoU'])} | "
                  f"{ms(r['delta_mIoU']) if name != base_arm else ''} | {ms(r['gap_closed'], 100)} |")
    md += ["", "## Paired differences", "",
           "Each seed trains every arm, so arms are compared seed by seed: the difference of mIoU on the same "
           "seed, then its mean and std over seeds, and the 95% confidence interval of the mean difference "
           "(Student's t). A difference whose interval holds 0, or an arm better on only some seeds, is not a "
           "result.", "",
           "| a − b | mean ± std | 95% CI | min – max | a better on |", "|---|---|---|---|---|"]
    ci = lambda p: f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]" if p.get("ci95") else "–"  # noqa: E731
    md += [f"| {label[p['a']]} − {label[p['b']]} | {p['mean']:+.2f} ± {p['std']:.2f} | {ci(p)} | {p['min']:+.2f} – "
           f"{p['max']:+.2f} | {p['a_better']}/{p['seeds']} seeds |" for p in m["paired_mIoU"]]
    md += translation_quality(rows, lambda v, k=1.0, d=2: "" if not v else f"{k * v['mean']:.{d}f} ± {k * v['std']:.{d}f}")
    names = list(rows)
    md += ["", "## Per-class IoU", "", "![per-class IoU](figures/per_class_iou.png)", "",
           "| class | " + " | ".join(label[a] for a in names) + " |", "|---|" + "---|" * len(names)]
    for c in rows[names[0]]["per_class_IoU"]:
        md.append(f"| {c} | " + " | ".join(ms(rows[a]["per_class_IoU"][c]) or "n/a" for a in names) + " |")
    text = "\n".join(md) + "\n"
    md_path, html_path = run / "report.md", run / "report.html"
    atomic_write_text(md_path, text)
    atomic_write_text(html_path, to_html(text, run, title=f"i2iuda study over {n} seeds: {run.name}"))
    return md_path, html_path


def to_html(text: str, base: Path, title: str) -> str:
    """Markdown -> one self-contained HTML page (Python-Markdown; images inlined as data URIs)."""
    def inline(m: re.Match) -> str:
        p = base / m[1]
        return 'src="data:image/png;base64,' + base64.b64encode(p.read_bytes()).decode() + '"' if p.is_file() else m[0]

    body = re.sub(r'src="([^"]+\.png)"', inline, markdown.markdown(text, extensions=["tables"]))
    return PAGE.render(title=title, body=body)


def check_in_browser(page: Path, screenshot: Path | None = None, browser: str = "chromium") -> tuple[int, int]:
    """Open ``page`` in headless Chromium (fresh profile, no network) and return (images that
    loaded, images on the page); optionally save a full-page screenshot."""
    import shutil
    import subprocess
    import tempfile

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
            subprocess.run([exe, *flags, f"--user-data-dir={profile}", "--window-size=1200,7000",
                            "--hide-scrollbars", f"--screenshot={Path(screenshot).resolve()}", url],
                           capture_output=True, timeout=120)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    if not m:
        raise UserError(f"{page}: the browser did not finish loading the page")
    return int(m[1]), int(m[2])


def compare_runs(runs: list[Path], out: Path) -> Path:
    """``i2iuda report RUN_A RUN_B ...``: the runs' results side by side (out/comparison.{md,html})."""
    md = ["# i2iuda: runs compared", "", "| run | arm | PA | MPA | mIoU | FWIoU | gap closed |",
          "|---|---|---|---|---|---|---|"]
    for r in runs:
        m = read_metrics(Path(r) / "metrics.json")
        # a multi-seed run (schema aggregate/1) shows mean ± std
        f = lambda x, k=1: f"{k * x['mean']:.2f} ± {k * x['std']:.2f}" if isinstance(x, dict) else f"{k * x:.2f}"  # noqa: E731
        for name, v in m["arms"].items():
            gap = f(v["gap_closed"], 100) + "%" if v["gap_closed"] is not None else ""
            md.append(f"| {Path(r).name} | {nice(name, v['bound'])} | {f(v['PA'])} | {f(v['MPA'])} | {f(v['mIoU'])} | "
                      f"{f(v['FWIoU'])} | {gap} |")
    text = "\n".join(md) + "\n"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file is there, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", text)
    atomic_write_text(out / "comparison.html", to_html(text, out, "i2iuda: runs compared"))
    return out / "comparison.html"
