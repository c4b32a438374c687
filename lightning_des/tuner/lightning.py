"""FlexHB for Lightning: tune any LightningCLI recipe (model + data + trainer) over a search
space of its config keys, with epochs or steps as the fidelity.

    lightning-des tune --config recipes/tune_deepfm_movielens.yaml

Each trial lives in ``output_dir/trials/<id>/``; a job trains it from its last checkpoint
(``last.ckpt``) to the job's target budget, so a paused trial resumes without repeating any
training. :class:`FidelityReportCallback` records the metric at every fine-grained point.
``study.json`` holds the whole study (an interrupted run continues from it), ``results.json``
the trials and ``best.yaml`` the recipe with the best configuration, ready for ``fit``.

Where trials run: ``executor="local"`` (default) uses ``n_workers`` local processes; a trial
whose recipe trains on several processes (``trainer.devices`` or ``num_nodes`` > 1, e.g. DES)
runs as its own ``python -m lightning_des.tuner.trial`` subprocess so that Lightning's launcher
can start its ranks. ``executor="submitit"`` submits each job to SLURM through submitit (one
task per device and node, Lightning reads the ranks from SLURM), or runs it locally with
``executor_options: {cluster: local}``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_des.tuner.flexhb import FlexHB, Job
from lightning_des.tuner.space import SearchSpace

log = logging.getLogger(__name__)
Fidelity = Literal["epochs", "steps"]


class FidelityReportCallback(Callback):
    """Record ``metric`` after every validation, keyed by the budget reached (epochs done, or
    optimizer steps done). Sanity-check validations are ignored."""

    def __init__(self, metric: str, fidelity: Fidelity = "epochs") -> None:
        self.metric, self.fidelity = metric, fidelity
        self.reports: dict[float, float] = {}

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            raise KeyError(f"metric {self.metric!r} was not logged; logged: {sorted(trainer.callback_metrics)}")
        budget = trainer.current_epoch + 1 if self.fidelity == "epochs" else trainer.global_step
        self.reports[float(budget)] = float(trainer.callback_metrics[self.metric])


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    *path, last = dotted.split(".")
    for k in path:
        node = node.setdefault(k, {})
    node[last] = value


def run_trial(recipe: str, job: Job, trial_dir: str, metric: str, sign: float, fidelity: Fidelity, seed: int, grain: float) -> dict[float, float]:
    """Train one trial from its last checkpoint (if any) to ``job.target``; return the signed
    metric at ``job.points``. Runs in a worker process."""
    import torch

    from lightning_des.recipes import cli_main

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    d = Path(trial_dir)
    d.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(Path(recipe).read_text())
    for k, v in job.config.items():
        _set(cfg, k, v)
    trainer_cfg = cfg.setdefault("trainer", {})
    trainer_cfg["callbacks"] = [c for c in trainer_cfg.get("callbacks") or []
                                if not str(c.get("class_path", "")).endswith(("EarlyStopping", "ModelCheckpoint"))]
    trainer_cfg["callbacks"] += [
        {"class_path": "lightning_des.tuner.lightning.FidelityReportCallback", "init_args": {"metric": metric, "fidelity": fidelity}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": str(d), "save_last": True, "save_top_k": 0}},
    ]
    trainer_cfg.update(default_root_dir=str(d), logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    if fidelity == "epochs":
        trainer_cfg.update(max_epochs=int(job.target), max_steps=-1)
    else:
        trainer_cfg.update(max_steps=int(job.target), max_epochs=-1, val_check_interval=int(grain), check_val_every_n_epoch=None)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cli = cli_main(["--config", str(d / "config.yaml"), "--seed_everything", str(seed)], run=False)
    report = next(c for c in cli.trainer.callbacks if isinstance(c, FidelityReportCallback))
    last = d / "last.ckpt"
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(last) if job.start > 0 and last.exists() else None)
    if cli.trainer.global_rank != 0:
        return {}
    missing = [p for p in job.points if p not in report.reports]
    if missing:
        raise RuntimeError(f"trial {job.trial_id}: no {metric!r} at budgets {missing}; reported {sorted(report.reports)}")
    return {p: sign * report.reports[p] for p in job.points}


def process_counts(recipe: dict) -> tuple[int, int]:
    """(devices per node, nodes) of a recipe's trainer (``auto``/unset count as 1)."""
    tr = recipe.get("trainer") or {}
    devices = tr.get("devices", 1)
    n = len(devices) if isinstance(devices, (list, tuple)) else (int(devices) if str(devices).isdigit() else 1)
    return n, int(tr.get("num_nodes", 1) or 1)


def is_distributed(recipe: dict) -> bool:
    """Whether a recipe's trainer runs on several processes (devices or num_nodes > 1)."""
    return max(process_counts(recipe)) > 1


def run_trial_subprocess(recipe: str, job: Job, trial_dir: str, metric: str, sign: float, fidelity: Fidelity, seed: int,
                         grain: float) -> dict[float, float]:
    """:func:`run_trial` in a fresh ``python -m lightning_des.tuner.trial`` process, so that a
    multi-process (e.g. DES) trainer can launch its ranks; returns rank 0's result."""
    d = Path(trial_dir)
    d.mkdir(parents=True, exist_ok=True)
    spec = d / f"job{job.target:g}.json"
    result = spec.with_suffix(".result.json")
    result.unlink(missing_ok=True)
    spec.write_text(json.dumps({"recipe": recipe, "job": vars(job), "trial_dir": trial_dir, "metric": metric, "sign": sign,
                                "fidelity": fidelity, "seed": seed, "grain": grain, "result": str(result)}))
    proc = subprocess.run([sys.executable, "-m", "lightning_des.tuner.trial", str(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"trial {job.trial_id} (job to {job.target:g}) failed with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {float(k): v for k, v in json.loads(result.read_text()).items()}


class FlexHBTuner:
    """Tune a LightningCLI recipe with :class:`FlexHB`.

    Args:
        recipe: a ``lightning-des fit`` YAML (model, data, trainer).
        space: search space over dotted config keys, e.g.
            ``{"model.init_args.dense_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}``.
        metric: logged metric to optimise (e.g. ``val_logloss``); ``direction`` min or max.
        fidelity: ``epochs`` or ``steps``; ``min_budget``/``max_budget``/``grain`` in that unit.
        method: ``flexhb``, ``bohb``, ``hyperband`` or ``random`` (see :class:`FlexHB`).
        total_budget: budget to spend, in full-fidelity equivalents (``max_budget`` units each).
        n_workers: trials run in parallel (local processes, or submitit jobs at a time).
        executor: ``local`` or ``submitit`` (SLURM through submitit; see the module docstring).
        executor_options: for submitit: ``folder`` (default ``output_dir/submitit``),
            ``cluster`` (``None`` = auto-detect SLURM, ``local``, ``debug``) and any
            ``AutoExecutor.update_parameters`` key (``slurm_partition``, ``timeout_min`` ...).
        output_dir: trial directories, ``study.json``, ``results.json``, ``best.yaml``.
        seed: tuner seed; trials are seeded with it too.
        tuner_kwargs: further :class:`FlexHB` switches (``global_sh``, ``flexband`` ...).
    """

    def __init__(
        self,
        recipe: str,
        space: dict[str, dict[str, Any]],
        metric: str = "val_logloss",
        direction: Literal["min", "max"] = "min",
        fidelity: Fidelity = "epochs",
        min_budget: float = 1,
        max_budget: float = 9,
        eta: int = 3,
        grain: float | None = None,
        method: Literal["flexhb", "bohb", "hyperband", "random"] = "flexhb",
        total_budget: float = 10.0,
        n_workers: int = 1,
        output_dir: str = "lightning_logs/tune",
        seed: int = 0,
        tuner_kwargs: dict[str, Any] | None = None,
        executor: Literal["local", "submitit"] = "local",
        executor_options: dict[str, Any] | None = None,
    ) -> None:
        if not Path(recipe).is_file():
            raise FileNotFoundError(f"tune recipe {recipe!r} not found")
        if direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
        if fidelity not in ("epochs", "steps"):
            raise ValueError(f"fidelity must be 'epochs' or 'steps', got {fidelity!r}")
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if executor not in ("local", "submitit"):
            raise ValueError(f"executor must be 'local' or 'submitit', got {executor!r}")
        self.executor, self.executor_options = executor, dict(executor_options or {})
        if executor == "local" and self.executor_options:
            raise ValueError(f"executor_options are for executor='submitit', got {sorted(self.executor_options)}")
        self.recipe, self.metric, self.fidelity = str(Path(recipe).resolve()), metric, fidelity
        self.sign = 1.0 if direction == "min" else -1.0
        self.space = SearchSpace.from_dict(space)
        self.total = total_budget * max_budget
        self.n_workers, self.seed = n_workers, seed
        self.out = Path(output_dir)
        self.tuner = FlexHB(self.space, min_budget, max_budget, eta, grain, mode=method, seed=seed,
                            max_active_brackets=n_workers, **(tuner_kwargs or {}))
        self.study = self.out / "study.json"
        if self.study.is_file():
            self.tuner.load(self.study)
            log.info("resuming the study in %s (%.0f of %.0f budget used)", self.study, self.tuner.budget_used, self.total)

    def _pool(self):
        """The executor: local processes (threads that wait on subprocesses for distributed
        trials) or a submitit ``AutoExecutor``."""
        recipe = yaml.safe_load(Path(self.recipe).read_text())
        if self.executor == "submitit":
            from lightning_des._extras import require

            submitit = require("submitit", "tune")

            opts = dict(self.executor_options)
            ex = submitit.AutoExecutor(folder=opts.pop("folder", str(self.out / "submitit")), cluster=opts.pop("cluster", None))
            tasks, nodes = process_counts(recipe)
            ex.update_parameters(**{"tasks_per_node": tasks, "nodes": nodes, "timeout_min": 60, **opts})
            return ex, run_trial
        if is_distributed(recipe):
            return cf.ThreadPoolExecutor(self.n_workers), run_trial_subprocess
        return cf.ProcessPoolExecutor(self.n_workers, mp_context=mp.get_context("spawn")), run_trial

    def run(self) -> dict[str, Any]:
        """Run until ``total_budget`` is spent; returns (and writes) the results."""
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        pool, fn = self._pool()
        running: dict[Any, Job] = {}
        try:
            while self.tuner.budget_used < self.total or running:
                while self.tuner.budget_used + sum(j.cost for j in running.values()) < self.total and len(running) < self.n_workers:
                    job = self.tuner.ask()
                    if job is None:
                        break
                    running[pool.submit(fn, self.recipe, job, str(self.out / "trials" / str(job.trial_id)), self.metric, self.sign,
                                        self.fidelity, self.seed, self.tuner.grain)] = job
                if not running:
                    break
                if all(isinstance(f, cf.Future) for f in running):
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                else:  # submitit jobs: poll
                    while not (done := [f for f in running if f.done()]):
                        time.sleep(1.0)
                for fut in done:
                    job = running.pop(fut)
                    self.tuner.tell(job, fut.result())
                    self.tuner.save(self.study)
        finally:
            if isinstance(pool, cf.Executor):
                pool.shutdown(cancel_futures=True)
        return self.write_results(time.perf_counter() - t0)

    def write_results(self, seconds: float = 0.0) -> dict[str, Any]:
        t = self.tuner
        trials = [{"id": tr.id, "config": tr.config, "budget": tr.budget,
                   "metric": {b: self.sign * v for b, v in sorted(tr.measurements.items())}} for tr in t.trials]
        best = t.best()
        res: dict[str, Any] = {"metric": self.metric, "budget_used": t.budget_used, "seconds": seconds, "trials": trials,
                               "bracket_choices": t.bracket_choices, "best": None}
        if best is not None:
            cfg, loss = best
            res["best"] = {"config": cfg, self.metric: self.sign * loss}
            recipe = yaml.safe_load(Path(self.recipe).read_text())
            for k, v in cfg.items():
                _set(recipe, k, v)
            header = f"# FlexHB best of {len(trials)} trials: {self.metric} {self.sign * loss:.5f} at budget {t.max_budget:g} {self.fidelity}\n"
            (self.out / "best.yaml").write_text(header + yaml.safe_dump(recipe, sort_keys=False))
        (self.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
        try:
            from lightning_des.tuner.plots import plot_study

            res["plot"] = str(plot_study(t, self.out / "study.png", Path(self.recipe).stem))
        except ImportError:  # matplotlib is the optional `bench` extra
            log.info("matplotlib not installed: no study.png")
        return res

    def table(self) -> str:
        """Trials ranked by the metric at the highest budget each reached (markdown)."""
        rows = sorted(self.tuner.trials, key=lambda tr: (-tr.budget, tr.measurements.get(tr.budget, math.inf)))
        keys = list(self.space.params)
        lines = ["| trial | budget | " + " | ".join(keys) + f" | {self.metric} |", "|---" * (len(keys) + 3) + "|"]
        for tr in rows:
            v = tr.measurements.get(tr.budget)
            vals = " | ".join(f"{tr.config[k]:.4g}" if isinstance(tr.config[k], float) else str(tr.config[k]) for k in keys)
            lines.append(f"| {tr.id} | {tr.budget:g} | {vals} | {'' if v is None else f'{self.sign * v:.5f}'} |")
        return "\n".join(lines)


def tune_main(argv: list[str]) -> int:
    """``lightning-des tune --config <tune config>``: :class:`FlexHBTuner` from YAML (its
    arguments as keys; ``recipe`` relative to the working directory or the config file)."""
    import sys

    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="lightning-des tune", description="FlexHB hyperparameter tuning of a LightningCLI recipe.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(FlexHBTuner, as_group=False)
    cfg = parser.parse_args(argv)
    from lightning_des.recipes import recipe_path

    cfg.recipe = recipe_path(cfg)
    kwargs = {k: v for k, v in cfg.as_dict().items() if k != "config"}
    try:
        tuner = FlexHBTuner(**kwargs)
    except (FileNotFoundError, ValueError) as err:
        print(f"lightning-des tune: {err}", file=sys.stderr)
        return 1
    res = tuner.run()
    print(tuner.table())
    print(json.dumps(res["best"], indent=2, default=str))
    print(f"best recipe: {tuner.out / 'best.yaml'}")
    return 0
