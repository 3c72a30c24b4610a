"""The study (``i2iuda run``): every way of closing the domain gap as an *arm*, all trained and
evaluated on one protocol, in one run folder. The modules, in the order of the flow:

    config.py       the settings (typed dataclasses, saved in RUN/config.yaml)
    arms.py         the arms, and what each one's segmenter trains and is selected on
    plan.py         the stages in order, their config hashes, what each reads; RUN/stages.json
    steps.py        what each stage does
    diagnostics.py  the evaluate stage's pictures and scores that need models
    results.py      RUN/metrics.json, RUN/study.json, the printed table
    run.py          the runner: skip, redo, resume, --from, lanes
    lanes.py        stages side by side in processes of their own
    seeds.py        one study per seed and their aggregate
"""
from .config import SelfTrain, StudyConfig, StudyData, StudyEval, StudyTranslate
from .results import results_table
from .run import run_study
from .seeds import parse_seeds, run_seeds, seeds_table

__all__ = ["SelfTrain", "StudyConfig", "StudyData", "StudyEval", "StudyTranslate", "parse_seeds", "results_table",
           "run_seeds", "run_study", "seeds_table"]
