"""How the translators of a study look, side by side: per translation arm, its translated source val
frames' checkerboard score and colour cast against the target train frames, their class cast
against the target val frames' class colours (it reads target val labels), the edges they kept of
the source frames (appearance.py), KID against them (fid.py, when the FID Inception weights are
installed), and the same for the raw source
and the target's own frames (the floors: its train frames' checkerboard, its val frames' cast and KID).

    python benchmarks/translation_look.py RUN [RUN ...] [--n 200] [--arms A,B] [--json FILE] [--picture PNG]

--arms: only these translation arms (default: every one whose apply stage ran).

--picture: the first frames of source val, raw and as each arm translated them, and target train
frames (other scenes) for reference, each pixel 2x2 (of the first RUN's first seed).

RUN: a study folder whose apply stages ran (``i2iuda run ... --stop-after apply`` is enough), or a
multi-seed study's (its seed_S folders are read): a row per arm and seed, then the mean over seeds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from i2iuda.config import load_config
from i2iuda.study import Study, StudyConfig
from i2iuda.study.arms import Translation
from i2iuda.study.diagnostics import class_reference, frames_of, look, read_set


def applied(study, only: list[str] | None = None) -> list[Translation]:
    """The study's translation arms whose apply stage ran (of ``only``, where given)."""
    return [a for a in study.arms.values() if isinstance(a, Translation) and (a.folder("apply") / "about.json").is_file()
            and (not only or a.name in only)]


def rows_of(run: Path, n: int, only: list[str] | None = None) -> list[dict]:
    cfg = load_config(StudyConfig, run / "config.yaml")
    study = Study.resolve(cfg, run)
    target = frames_of(study.specs["target_train"], n)
    from i2iuda import appearance

    # the class cast's reference and floor as the look stage measures them (its number of frames)
    classes, class_floor = class_reference(read_set(study.specs["target_val"]), read_set(study.specs["target_train"]))
    floor = {"checkerboard_db": appearance.checkerboard_db(target), "colour": appearance.colour(target),
             "class_colour": classes}
    out = [{"arm": "(target train)", "checkerboard_db": floor["checkerboard_db"], "cast": 0.0, "chroma_shift": 0.0,
            "class_cast": class_floor}]
    specs = [("(target val)", study.specs["target_val"], None), ("(raw source)", study.specs["source_val"], None)]
    specs += [(a.name, a.translated("val"), study.specs["source_val"]) for a in applied(study, only)]
    kid = None
    try:
        from i2iuda.fid import load_inception, score

        net = load_inception()
        if net is not None:
            kid = lambda spec: score(spec, study.specs["target_train"], min(n, 96), run / "fid_cache", net)["KID"]  # noqa: E731
    except ImportError:
        pass
    for name, spec, source in specs:
        look_ = look(spec, floor, source)
        out.append({"arm": name, "checkerboard_db": look_["checkerboard_db"], "cast": look_["colour_shift"]["cast"],
                    "cast_hue_deg": look_["colour_shift"]["cast_hue_deg"], "chroma_shift": look_["colour_shift"]["chroma"],
                    "edges_kept": look_["edges_kept"], "KID": kid(spec) if kid else None,
                    "class_cast": (look_["class_cast"] or {}).get("cast"),
                    "class_lightness": (look_["class_cast"] or {}).get("lightness")})
    return out


def picture(run: Path, path: Path, k: int = 4, scale: int = 2, only: list[str] | None = None) -> None:
    """Source val frames in rows, raw then each translation arm's, in columns; each pixel ``scale``
    x ``scale`` (nearest, so a period-2 pattern stays one)."""
    from i2iuda.io import save_png
    from i2iuda.pictures import grid

    study = Study.resolve(load_config(StudyConfig, run / "config.yaml"), run)
    arms = applied(study, only)
    columns = [frames_of(study.specs["source_val"], k)] + [frames_of(a.translated("val"), k) for a in arms]
    columns.append(frames_of(study.specs["target_train"], k))  # what the translations aim at (other scenes)
    rows = [[np.kron(c[i], np.ones((scale, scale, 1), np.uint8)) for c in columns] for i in range(k)]
    save_png(path, grid(rows, captions=["raw source"] + [a.name for a in arms] + ["target train (other scenes)"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--arms", type=lambda v: v.split(","))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--picture", type=Path)
    args = ap.parse_args()
    if args.picture:
        picture((sorted(args.runs[0].glob("seed_*")) or [args.runs[0]])[0], args.picture, only=args.arms)
    table = {}
    for run in args.runs:
        folders = sorted(run.glob("seed_*")) or [run]
        for f in folders:
            for r in rows_of(f, args.n, args.arms):
                table.setdefault(r["arm"], []).append({**r, "run": str(f)})
    print(f"{'arm':22s} {'checkerboard dB':>16s} {'cast':>12s} {'chroma':>12s} {'edges kept':>12s} {'KID x1000':>14s}"
          f" {'class cast':>14s} {'class L*':>14s}"
          "  (mean ± std over runs)")
    ms = lambda v: "" if not v or any(x is None for x in v) else f"{np.mean(v):6.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:4.2f}"  # noqa: E731
    for arm, rs in table.items():
        print(f"{arm:22s} {ms([r['checkerboard_db'] for r in rs]):>16s} {ms([r['cast'] for r in rs]):>12s} "
              f"{ms([r['chroma_shift'] for r in rs]):>12s} {ms([r.get('edges_kept') for r in rs]):>12s} "
              f"{ms([r.get('KID') for r in rs]):>14s} {ms([r.get('class_cast') for r in rs]):>14s} "
              f"{ms([r.get('class_lightness') for r in rs]):>14s}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
