"""Answer quality of `sleeve train` on the discogs5 covers: mean ± sd over three split seeds.

    .venv/bin/python bench/train_accuracy.py                                  # the defaults
    .venv/bin/python bench/train_accuracy.py --label "head only" -- --fine-tune-epochs 0
    .venv/bin/python bench/train_accuracy.py --work /tmp/acc --seeds 0,1,2 -- --no-augment

Each seed is a dataset built from the same import with `sleeve dataset build --seed S`
(deduplicated and split as the product does), trained with the product's CLI and the
options after `--`. Figures are the registered version's own report: top-1/2/3, macro F1,
log loss, ECE, and the two baselines the run scored on the same test split. `--work DIR`
keeps the database, store and trunk activations between invocations, so configurations
that share a cut and views reuse them (the first run of each computes them: its wall time
says so). Prints the machine, each run's figures and wall time, and the means.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchkit import ROOT, WEIGHTS, machine, say

DISCOGS5 = ROOT.parent / "shared" / "datasets" / "discogs5"
SLEEVE = ROOT / ".venv" / "bin" / "sleeve"
FIGURES = ("accuracy", "macro_f1", "top2_accuracy", "top3_accuracy", "log_loss")


def sleeve(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(SLEEVE), *args], env=env, check=True, stdout=subprocess.DEVNULL)


def latest_metrics(database: Path) -> dict[str, object]:
    with sqlite3.connect(database) as db:
        (metrics,) = db.execute("SELECT metrics FROM model_versions ORDER BY id DESC").fetchone()
    result: dict[str, object] = json.loads(metrics)
    return result


def line(label: str, values: dict[str, list[float]]) -> str:
    def cell(name: str) -> str:
        series = values[name]
        spread = statistics.stdev(series) if len(series) > 1 else 0.0
        return f"{name} {statistics.mean(series):.3f} ± {spread:.3f}"

    return f"{label}: " + ", ".join(cell(name) for name in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="folder kept between runs (default: a new one)")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds (default 0,1,2)")
    parser.add_argument("--label", default="defaults", help="name of this configuration")
    parser.add_argument("train_args", nargs="*", help="options for `sleeve train`, after --")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sleeve-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    database = work / "sleeve.db"
    env = {
        **os.environ,
        "SLEEVE_DATABASE_URL": f"sqlite:///{database}",
        "SLEEVE_STORE_URL": f"file://{work / 'store'}",
        "SLEEVE_DATA_DIR": str(work / "var"),
        "SLEEVE_BASE_WEIGHTS": str(WEIGHTS),
        "SLEEVE_LOG_LEVEL": "WARNING",
    }
    say(*machine(), f"work folder: {work}; configuration {args.label!r}: {args.train_args}")
    if not database.exists():
        sleeve(env, "db", "upgrade")
        sleeve(env, "scrape", "--source", "folder", "--path", str(DISCOGS5))
    sleeve(env, "db", "upgrade")
    scores: dict[str, list[float]] = {name: [] for name in FIGURES}
    scores["expected_calibration_error"] = []
    baselines: dict[str, dict[str, list[float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        with sqlite3.connect(database) as db:
            built = db.execute("SELECT 1 FROM datasets WHERE name = ?", (f"seed{seed}",)).fetchone()
        if not built:
            sleeve(env, "dataset", "build", "--name", f"seed{seed}", "--seed", str(seed))
        started = time.perf_counter()
        sleeve(env, "train", "--dataset", f"seed{seed}", *args.train_args)
        wall = time.perf_counter() - started
        metrics = latest_metrics(database)
        for name, series in scores.items():
            series.append(float(metrics[name]))  # type: ignore[arg-type]
        for name, figures in metrics.get("baselines", {}).items():  # type: ignore[union-attr]
            for figure in FIGURES:
                baselines.setdefault(name, {}).setdefault(figure, []).append(figures[figure])
        say(
            f"seed {seed}: top-1 {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}, "
            f"top-2 {metrics['top2_accuracy']:.3f} ({wall:.0f} s)"
        )
    say(line(args.label, scores))
    for name, figures in baselines.items():
        say(line(f"baseline {name}", figures))


if __name__ == "__main__":
    main()
