"""FlexHB for Lightning: tune any LightningCLI recipe (model + data + trainer) over a search
space of its config keys, with epochs or steps as the fidelity.

    lightning-des tune --config recipes/tune_deepfm_movielens.yaml

Each trial lives in ``output_dir/trials/<id>/``; a job trains it from its last checkpoint
(``last.ckpt``) to the job's target budget, so a paused trial resumes without repeating any
training. :class:`FidelityReportCallback` records the metric at every fine-grained point and
keeps its records (and torch's generator) in the checkpoints, so a job cut short resumes from
its last checkpoint too. ``study.json`` holds the whole study, saved after every finished job,
``results.json`` the trials (failed ones with their errors) and ``best.yaml`` the recipe with
the best configuration, ready for ``fit``.

Interruptions: run the same command again. The study continues with the same settings
(``settings.json``; a different recipe, space, method, budget, metric or seed is refused naming
the difference: ``overwrite=True`` starts over); jobs that were running are given again and
resume from their trials' checkpoints, so no finished budget is trained or charged twice. A
trial whose job raises, or reports a non-finite metric, is recorded as failed and the study goes
on (``max_failed_trials`` stops it); a trial process that dies from a signal (kill -9, the OOM
killer) is run again from its checkpoint (``max_retries`` times).

Where trials run: ``executor="local"`` (default) uses ``n_workers`` local processes; a trial
whose recipe trains on several processes (``trainer.devices`` or ``num_nodes`` > 1, e.g. DES)
runs as its own ``python -m lightning_des.tuner.trial`` subprocess so that Lightning's launcher
can start its ranks. ``executor="submitit"`` submits each job to SLURM through submitit (one
task per device and node, Lightning reads the ranks from SLURM), or runs it locally with
``executor_options: {cluster: local}``.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import fcntl
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import lightning.pytorch as pl
import torch
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
        self._rng: Any = None

    @override
    def state_dict(self) -> dict[str, Any]:
        # in every checkpoint: a job resumed from one still returns the points before it, and
        # dropout continues the generator an uninterrupted run would have used
        return {"reports": [[b, v] for b, v in sorted(self.reports.items())], "torch_rng": torch.get_rng_state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reports = {float(b): float(v) for b, v in state_dict.get("reports", [])}
        self._rng = state_dict.get("torch_rng")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # one process: its generator is the checkpoint's (several ranks would all get rank 0's)
        if self._rng is not None and trainer.world_size == 1:
            torch.set_rng_state(self._rng)
        self._rng = None

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            raise KeyError(f"metric {self.metric!r} was not logged; logged: {sorted(trainer.callback_metrics)}")
        budget = trainer.current_epoch + 1 if self.fidelity == "epochs" else trainer.global_step
        self.reports[float(budget)] = float(trainer.callback_metrics[self.metric])


class LastCheckpoint(Callback):
    """Write ``path`` after every validation (every fine-grained point), replacing the previous
    one only once the new one is complete: a job killed at any moment leaves a whole checkpoint
    to resume from (files or DES checkpoint directories alike). ``ModelCheckpoint(save_last=True,
    save_top_k=0)`` writes ``last.ckpt`` only at the end of a fit in Lightning 2.6, so a job cut
    short would restart from the previous job's checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        tmp, old = self.path.with_name(self.path.name + ".tmp"), self.path.with_name(self.path.name + ".old")
        trainer.save_checkpoint(tmp)  # collective for sharded strategies; ends with a barrier
        if trainer.is_global_zero:
            if self.path.exists():
                self.path.rename(old)  # a file or a DES checkpoint directory
            tmp.rename(self.path)
            _remove(old)
        trainer.strategy.barrier("LastCheckpoint")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _set(cfg: dict, dotted: str, value: Any) -> None:
    node = cfg
    *path, last = dotted.split(".")
    for k in path:
        node = node.setdefault(k, {})
    node[last] = value


_TRIAL_PROCS: set[subprocess.Popen] = set()  # trial subprocesses running now (killed by FlexHBTuner._stop)


class TrialKilled(RuntimeError):
    """A trial's process died from a signal (not an error of the trial): run it again."""


def _die_with_parent() -> None:
    """Worker initializer: the kernel kills this process when its parent dies (Linux), so a
    killed tuner leaves no trial training on behind it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def _trial_lock(d: Path, timeout: float = 60.0) -> Iterator[None]:
    """One job at a time in a trial directory (a process left over from a killed tuner may
    still be writing there: wait for it, then fail naming the directory)."""
    with open(d / ".lock", "w") as f:
        deadline = time.time() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"trial directory {d} is in use by another process") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resume_from(d: Path, job: Job) -> Path | None:
    """The checkpoint this job continues from. ``job.json`` names the last job started here:
    the same job again (it was cut short) resumes from whatever ``last.ckpt`` it reached; a
    new job with ``start > 0`` resumes from the previous job's; one from 0 starts afresh."""
    last, marker = d / "last.ckpt", d / "job.json"
    old, tmp = d / "last.ckpt.old", d / "last.ckpt.tmp"
    if not last.exists() and old.exists():  # killed between LastCheckpoint's two renames
        old.rename(last)
    _remove(old)
    _remove(tmp)  # an incomplete save
    me = {"config": job.config, "start": job.start, "target": job.target}
    again = marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(me))
    if not again and job.start == 0:
        _remove(last)  # retrain from scratch (resume=False)
    if not again and job.start > 0 and not last.exists():
        raise FileNotFoundError(f"trial {job.trial_id}: resuming from budget {job.start:g} needs {last}, which is missing")
    marker.write_text(json.dumps(me))
    return last if last.exists() else None


def run_trial(recipe: str, job: Job, trial_dir: str, metric: str, sign: float, fidelity: Fidelity, seed: int, grain: float) -> dict[float, float]:
    """Train one trial from its checkpoint (see :func:`_resume_from`) to ``job.target``;
    return the signed metric at ``job.points``. Runs in a worker process."""
    d = Path(trial_dir)
    d.mkdir(parents=True, exist_ok=True)
    if os.environ.get("LOCAL_RANK") not in (None, "0"):  # a rank Lightning's launcher started
        return _run_trial(recipe, job, d, metric, sign, fidelity, seed, grain, None)
    with _trial_lock(d):
        return _run_trial(recipe, job, d, metric, sign, fidelity, seed, grain, _resume_from(d, job))


def _run_trial(recipe: str, job: Job, d: Path, metric: str, sign: float, fidelity: Fidelity, seed: int, grain: float,
               ckpt: Path | None) -> dict[float, float]:
    from lightning_des.recipes import cli_main

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cfg = yaml.safe_load(Path(recipe).read_text())
    for k, v in job.config.items():
        _set(cfg, k, v)
    trainer_cfg = cfg.setdefault("trainer", {})
    trainer_cfg["callbacks"] = [c for c in trainer_cfg.get("callbacks") or []
                                if not str(c.get("class_path", "")).endswith(("EarlyStopping", "ModelCheckpoint"))]
    trainer_cfg["callbacks"] += [
        {"class_path": "lightning_des.tuner.lightning.FidelityReportCallback", "init_args": {"metric": metric, "fidelity": fidelity}},
        {"class_path": "lightning_des.tuner.lightning.LastCheckpoint", "init_args": {"path": str(d / "last.ckpt")}},
    ]
    trainer_cfg.update(default_root_dir=str(d), logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    if fidelity == "epochs":
        trainer_cfg.update(max_epochs=int(job.target), max_steps=-1)
    else:
        trainer_cfg.update(max_steps=int(job.target), max_epochs=-1, val_check_interval=int(grain), check_val_every_n_epoch=None)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # a bad configuration raises (a failed trial) instead of exiting the worker
    cli = cli_main(["--config", str(d / "config.yaml"), "--seed_everything", str(seed)], run=False,
                   parser_kwargs={"exit_on_error": False})
    report = next(c for c in cli.trainer.callbacks if isinstance(c, FidelityReportCallback))
    if ckpt is None and os.environ.get("LOCAL_RANK") not in (None, "0"):
        ckpt = d / "last.ckpt" if (d / "last.ckpt").exists() else None  # rank 0 decided; the file is the same
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(ckpt) if ckpt is not None else None)
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
    proc = subprocess.Popen([sys.executable, "-m", "lightning_des.tuner.trial", str(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_die_with_parent, start_new_session=True)
    _TRIAL_PROCS.add(proc)
    try:
        _, stderr = proc.communicate()
    finally:
        _TRIAL_PROCS.discard(proc)
    if proc.returncode < 0:
        raise TrialKilled(f"trial {job.trial_id} (job to {job.target:g}) was killed by signal {-proc.returncode}")
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"trial {job.trial_id} (job to {job.target:g}) failed with exit code {proc.returncode}:\n{stderr[-3000:]}")
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
        resume: continue a study found in ``output_dir`` (its settings must equal these;
            ``total_budget`` and ``n_workers`` may change). False: refuse an existing study.
        overwrite: delete a study found in ``output_dir`` and start over.
        max_failed_trials: stop (raising, with their errors) once more trials than this failed.
        max_retries: times a job whose process was killed by a signal is run again.

    Budgets must be whole numbers of epochs or steps (``grain`` too); ``executor="submitit"``
    needs ``executor_options.timeout_min`` (SLURM kills a job at its time limit: say which).
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
        resume: bool = True,
        overwrite: bool = False,
        max_failed_trials: int = 10,
        max_retries: int = 2,
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
        if executor == "submitit" and "timeout_min" not in self.executor_options:
            raise ValueError("executor='submitit' needs executor_options.timeout_min (minutes a trial job may run before "
                             "SLURM stops it); there is no default")
        for name, v in (("min_budget", min_budget), ("max_budget", max_budget), ("grain", grain)):
            if v is not None and float(v) != int(float(v)):
                raise ValueError(f"{name}={v} is not a whole number of {fidelity}")
        self.recipe, self.metric, self.fidelity = str(Path(recipe).resolve()), metric, fidelity
        self.sign = 1.0 if direction == "min" else -1.0
        self.space = SearchSpace.from_dict(space)
        self.total = total_budget * max_budget
        self.n_workers, self.seed = n_workers, seed
        self.max_failed, self.max_retries = max_failed_trials, max_retries
        self.out = Path(output_dir)
        self.tuner = FlexHB(self.space, min_budget, max_budget, eta, grain, mode=method, seed=seed,
                            max_active_brackets=n_workers, **(tuner_kwargs or {}))
        self.study = self.out / "study.json"
        self.settings = {
            "recipe": self.recipe, "recipe_sha256": hashlib.sha256(Path(recipe).read_bytes()).hexdigest(),
            "space": json.loads(json.dumps(space)), "metric": metric, "direction": direction, "fidelity": fidelity,
            "min_budget": float(min_budget), "max_budget": float(max_budget), "eta": eta, "grain": self.tuner.grain,
            "method": method, "seed": seed, "tuner_kwargs": json.loads(json.dumps(tuner_kwargs or {})),
            "switches": self.tuner.switches,  # resolved defaults: a newer version with other defaults is refused
        }
        self._open_study(resume, overwrite)

    def _open_study(self, resume: bool, overwrite: bool) -> None:
        settings = self.out / "settings.json"
        exists = self.study.is_file() or settings.is_file() or (self.out / "trials").is_dir()
        if exists and overwrite:
            for name in ("study.json", "settings.json", "results.json", "best.yaml", "study.png"):
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / "trials", ignore_errors=True)
            shutil.rmtree(self.out / "submitit", ignore_errors=True)
            log.info("overwrite: removed the study in %s", self.out)
        elif exists:
            if not resume:
                raise FileExistsError(f"{self.out} already holds a study: pass resume=True (--resume true) to continue it "
                                      "or overwrite=True (--overwrite true) to start over")
            old = json.loads(settings.read_text()) if settings.is_file() else None
            if old is None:
                raise ValueError(f"{self.out} holds a study without settings.json (another version?): overwrite=True starts over")
            diff = [f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in self.settings.items() if k != "switches" and old.get(k) != v]
            if not diff:  # same arguments resolved differently: another version's defaults
                was = old.get("switches") or {}
                diff = [f"switches.{k}: {was.get(k)!r} there, {v!r} now (this version's defaults)"
                        for k, v in self.settings["switches"].items() if was.get(k) != v]
            if diff:
                raise ValueError(f"the study in {self.out} was run with other settings ({'; '.join(diff)}): "
                                 "use another output_dir, or overwrite=True to start over")
            if self.study.is_file():
                self.tuner.load(self.study)
                log.info("resuming the study in %s (%.0f of %.0f budget used)", self.study, self.tuner.budget_used, self.total)
        self.out.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(self.settings, indent=1))

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
            ex.update_parameters(**{"tasks_per_node": tasks, "nodes": nodes, **opts})
            return ex, run_trial
        if is_distributed(recipe):
            return cf.ThreadPoolExecutor(self.n_workers), run_trial_subprocess
        return cf.ProcessPoolExecutor(self.n_workers, mp_context=mp.get_context("spawn"), initializer=_die_with_parent), run_trial

    def _finish(self, fut: Any, job: Job, retries: dict[int, int]) -> bool:
        """Tell the tuner how ``job`` ended; returns False when the pool must be rebuilt (a
        worker process died and took the pool with it)."""
        try:
            result = fut.result()
        except (TrialKilled, cf.BrokenExecutor) as err:
            retries[job.trial_id] = retries.get(job.trial_id, 0) + 1
            if retries[job.trial_id] > self.max_retries:
                self.tuner.fail(job, f"killed {retries[job.trial_id]} times: {err}")
            else:
                log.warning("trial %d: its process died (%s); running the job again from its checkpoint", job.trial_id, err)
                self.tuner.requeue(job)
            return not isinstance(err, cf.BrokenExecutor)
        except (Exception, SystemExit) as err:  # the trial's own error: record it, go on
            msg = f"{type(err).__name__}: {err}"
            log.warning("trial %d failed: %s", job.trial_id, msg.splitlines()[0] if msg else msg)
            self.tuner.fail(job, msg[-2000:])
            return True
        self.tuner.tell(job, result)
        return True

    def run(self) -> dict[str, Any]:
        """Run until ``total_budget`` is spent; returns (and writes) the results."""
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        pool, fn = self._pool()
        running: dict[Any, Job] = {}
        retries: dict[int, int] = {}
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
                healthy = True
                for fut in done:
                    healthy &= self._finish(fut, running.pop(fut), retries)
                    self.tuner.save(self.study)
                if len(self.tuner.failed()) > self.max_failed:
                    errors = "\n".join(f"  trial {t.id}: {t.error.splitlines()[0] if t.error else ''}" for t in self.tuner.failed())
                    raise RuntimeError(f"{len(self.tuner.failed())} trials failed (max_failed_trials={self.max_failed}):\n{errors}")
                if not healthy:  # a dead worker broke the process pool: every running job goes back
                    for fut, job in list(running.items()):
                        self._finish(fut, job, retries) if fut.done() and not fut.exception() else self.tuner.requeue(job)
                    running.clear()
                    self.tuner.save(self.study)
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool, fn = self._pool()
        finally:
            self._stop(pool, running)
        return self.write_results(time.perf_counter() - t0)

    @staticmethod
    def _stop(pool: Any, running: dict[Any, Job]) -> None:
        """Leave nothing running: cancel submitit jobs, kill local trial processes."""
        for fut in running:
            if hasattr(fut, "cancel") and not isinstance(fut, cf.Future):
                try:
                    fut.cancel(check=False)  # a submitit job
                except Exception as err:  # noqa: BLE001 (best effort on the way out)
                    log.warning("could not cancel submitit job %s: %s", getattr(fut, "job_id", "?"), err)
        if isinstance(pool, cf.Executor):
            if running:
                for child in mp.active_children():  # process-pool workers
                    child.kill()
                for proc in list(_TRIAL_PROCS):  # distributed trials' launchers and their ranks
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            pool.shutdown(wait=True, cancel_futures=True)

    def write_results(self, seconds: float = 0.0) -> dict[str, Any]:
        t = self.tuner
        trials = [{"id": tr.id, "config": tr.config, "budget": tr.budget,
                   "metric": {b: self.sign * v for b, v in sorted(tr.measurements.items())}} for tr in t.trials]
        best = t.best()
        for d, tr in zip(trials, t.trials):
            if tr.error is not None:
                d["error"] = tr.error
        res: dict[str, Any] = {"metric": self.metric, "budget_used": t.budget_used, "seconds": seconds, "trials": trials,
                               "bracket_choices": t.bracket_choices, "best": None,
                               "failed": [{"id": tr.id, "config": tr.config, "error": tr.error} for tr in t.failed()]}
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
            shown = f"failed: {tr.error.splitlines()[0][:80]}" if tr.error else ("" if v is None else f"{self.sign * v:.5f}")
            lines.append(f"| {tr.id} | {tr.budget:g} | {vals} | {shown} |")
        failed = self.tuner.failed()
        if failed:
            lines.append(f"\n{len(failed)} failed trial(s): " + ", ".join(str(tr.id) for tr in failed) + " (errors in results.json)")
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
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"lightning-des tune: {err}", file=sys.stderr)
        return 1
    res = tuner.run()
    print(tuner.table())
    print(json.dumps(res["best"], indent=2, default=str))
    print(f"best recipe: {tuner.out / 'best.yaml'}")
    return 0
