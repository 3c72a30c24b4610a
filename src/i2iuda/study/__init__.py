"""The study (``i2iuda run``): every way of closing the domain gap as an *arm*, all trained and
evaluated on one protocol, in one run folder. The modules, in the order of the flow:

    config.py       the settings (typed dataclasses, saved in RUN/config.yaml)
    arms/           one class per arm kind (source-only, translation, offline and online
                    self-training, the oracle), each answering for its stages, hashes, training
                    set, metrics row and report section; ``KINDS``, the plain dict of them
    study.py        a study resolved once: settings, run folder, data specs, arms by name
    plan.py         the stages in order, their config hashes, what each reads; RUN/stages.json
    diagnostics.py  the look and evaluate stages' pictures and scores that need models
    results.py      RUN/metrics.json, RUN/study.json, the report, the printed table
    run.py          the runner: skip, redo, resume, --from, lanes (../lanes.py); the data and report stages
    seeds.py        one study per seed and their aggregate
"""
from .arms.self_train import SelfTrain
from .config import StudyConfig, StudyData, StudyEval, StudyTranslate
from .results import report, results_table
from .run import run_study
from .seeds import parse_seeds, run_seeds, seeds_table
from .study import Study

__all__ = ["SelfTrain", "Study", "StudyConfig", "StudyData", "StudyEval", "StudyTranslate", "parse_seeds", "report",
           "results_table", "run_seeds", "run_study", "seeds_table"]
