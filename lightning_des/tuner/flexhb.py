"""FlexHB: multi-fidelity Bayesian optimisation with fine-grained fidelity, Global Successive
Halving (GloSH) and FlexBand; Hyperband, BOHB-style and random search in the same framework.

Ask/tell::

    tuner = FlexHB(space, min_budget=1, max_budget=27, eta=3, mode="flexhb", seed=0)
    while tuner.budget_used < 200:
        job = tuner.ask()                       # trial id, config, start -> target budget, points
        tuner.tell(job, objective(job))         # {budget: loss} at job.points

A *trial* is one configuration; it trains up to ``trial.budget`` and can be resumed from
there (``resume=True``: a job runs ``start -> target`` and costs ``target - start``).
``min_budget`` and ``max_budget`` must be multiples of ``grain``; rung levels are
``max_budget * eta**-k`` rounded to the nearest multiple of ``grain`` (half up; 1..10 with eta 3 and
grain 1: 1, 3, 10), so every budget a job trains to is a whole number of grains.

A job that fails (``fail``: an exception, a non-finite loss) marks its trial failed with the
error; the trial ranks last, is never promoted and the study goes on. ``requeue`` puts a job
whose worker died back in front of its bracket's queue (it resumes from its checkpoint).

Modes (each switch can also be set on its own for ablations):

=========== ============ =========== ========= ========== ==========================
mode        sampler      fine-grained GloSH     FlexBand   brackets
=========== ============ =========== ========= ========== ==========================
random      random       no           -         -          full budget only
hyperband   random       no           no        no         Hyperband's cycle
bohb        BO, 1 model  no           no        no         Hyperband's cycle
flexhb      BO, ensemble yes          yes       yes        adaptive
=========== ============ =========== ========= ========== ==========================
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from scipy.stats import spearmanr

from lightning_des.tuner.space import Config, SearchSpace
from lightning_des.tuner.surrogate import ForestSurrogate, MultiFidelityEnsemble, expected_improvement, standardise

Mode = Literal["random", "hyperband", "bohb", "flexhb"]
PRESETS: dict[str, dict[str, Any]] = {
    "random": dict(surrogate="none", fine_grained=False, global_sh=False, flexband=False),
    "hyperband": dict(surrogate="none", fine_grained=False, global_sh=False, flexband=False),
    "bohb": dict(surrogate="single", fine_grained=False, global_sh=False, flexband=False),
    "flexhb": dict(surrogate="ensemble", fine_grained=True, global_sh=True, flexband=True),
}


def _key(b: float) -> float:
    return round(float(b), 9)


def _whole_grains(v: float, grain: float) -> bool:
    return abs(v / grain - round(v / grain)) <= 1e-9


@dataclass
class Trial:
    id: int
    config: Config
    measurements: dict[float, float] = field(default_factory=dict)  # budget -> loss
    budget: float = 0.0  # trained so far
    pending: bool = False
    error: str | None = None  # why the trial failed, if it did

    def loss_at(self, budget: float) -> float | None:
        return self.measurements.get(_key(budget))


@dataclass
class Job:
    """Train ``trial_id`` from ``start`` (0 = from scratch) to ``target``; report the loss at
    every budget in ``points``."""

    trial_id: int
    config: Config
    start: float
    target: float
    points: list[float]
    bracket: int

    @property
    def cost(self) -> float:
        return self.target - self.start


@dataclass
class Bracket:
    id: int
    s: int
    rungs: list[tuple[float, int]]  # (budget, number of configurations)
    rung: int = 0
    members: list[list[int]] = field(default_factory=list)  # trial ids per rung
    queue: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    to_create: int = 0

    @property
    def done(self) -> bool:
        return self.rung >= len(self.rungs)


class FlexHB:
    """The tuner (see the module docstring).

    Args:
        space: the search space.
        min_budget: smallest fidelity (epochs, steps, data fraction units ...).
        max_budget: full fidelity.
        eta: Successive-Halving reduction factor.
        grain: fine-grained reporting step (default ``min_budget``); budgets are multiples.
        mode: ``random``, ``hyperband``, ``bohb`` or ``flexhb`` (sets the switches below).
        surrogate: ``none`` (random configurations), ``single`` (one forest on the highest
            fidelity with enough points, BOHB's rule) or ``ensemble`` (MFES-HB ensemble).
        fine_grained: keep every ``grain`` measurement (else only rung-boundary ones).
        group_step: with ``fine_grained``, fit one ensemble member per budget at the rung
            levels and at every multiple of ``group_step`` (the paper's fine-grained fidelity
            groups, its ``g``; each group holds the losses measured at exactly that budget).
            None (default): one group per rung level holding each trial's last measurement
            inside the level.
        global_sh: promote by rank among all trials that reached the rung, past brackets
            included.
        resume_paused: with ``global_sh``, promotion slots this bracket's own members leave
            free resume paused trials of past brackets from the global top. Default False: a
            bracket only filters its own members by their global rank (lower mean regret on 9 of
            10 benchmark problems, 30 seeds; docs/flexhb.md). True requires ``global_sh``.
        flexband: pick each bracket from the measured rank correlation between fidelities.
        resume: continue trials from their last budget (else a promotion retrains from 0).
        random_fraction: share of new configurations drawn at random even with a model.
        rho_threshold: FlexBand starts brackets at the lowest fidelity whose rank correlation
            with the full budget is at least this.
        max_active_brackets: brackets run concurrently when all ready jobs are taken
            (parallel workers); 1 = sequential Hyperband order.
        seed: RNG seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        min_budget: float,
        max_budget: float,
        eta: int = 3,
        grain: float | None = None,
        mode: Mode = "flexhb",
        surrogate: Literal["none", "single", "ensemble"] | None = None,
        fine_grained: bool | None = None,
        group_step: float | None = None,
        global_sh: bool | None = None,
        resume_paused: bool = False,
        flexband: bool | None = None,
        resume: bool = True,
        random_fraction: float = 0.2,
        rho_threshold: float = 0.5,
        n_candidates: int = 400,
        max_active_brackets: int = 1,
        seed: int = 0,
    ) -> None:
        if mode not in PRESETS:
            raise ValueError(f"mode must be one of {sorted(PRESETS)}, got {mode!r}")
        if not 0 < min_budget <= max_budget or eta < 2:
            raise ValueError(f"need 0 < min_budget <= max_budget and eta >= 2, got {min_budget}, {max_budget}, {eta}")
        grain = float(grain or min_budget)
        for name, v in (("min_budget", min_budget), ("max_budget", max_budget)):
            if not grain > 0 or not _whole_grains(v, grain):
                raise ValueError(f"{name}={v:g} is not a multiple of grain={grain:g}: budgets are whole numbers of grains")
        if group_step is not None and not (group_step > 0 and _whole_grains(group_step, grain)):
            raise ValueError(f"group_step={group_step:g} is not a positive multiple of grain={grain:g}")
        preset = PRESETS[mode]
        self.space, self.mode, self.eta = space, mode, eta
        self.surrogate = surrogate if surrogate is not None else preset["surrogate"]
        self.fine_grained = preset["fine_grained"] if fine_grained is None else fine_grained
        self.global_sh = preset["global_sh"] if global_sh is None else global_sh
        if resume_paused and not self.global_sh:
            raise ValueError("resume_paused=True needs global_sh (only Global SH resumes past brackets' trials)")
        self.resume_paused = resume_paused
        self.flexband = preset["flexband"] if flexband is None else flexband
        if self.surrogate not in ("none", "single", "ensemble"):
            raise ValueError(f"surrogate must be 'none', 'single' or 'ensemble', got {self.surrogate!r}")
        self.resume, self.random_fraction, self.rho_threshold = resume, random_fraction, rho_threshold
        self.n_candidates, self.max_active = n_candidates, max_active_brackets
        self.min_budget, self.max_budget = float(min_budget), float(max_budget)
        self.grain = grain
        self.group_step = None if group_step is None else float(group_step)
        self.s_max = 0 if mode == "random" else int(math.floor(math.log(max_budget / min_budget, eta) + 1e-9))
        self.levels = self._levels()  # ascending
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.trials: list[Trial] = []
        self.brackets: list[Bracket] = []
        self.budget_used = 0.0
        self.n_brackets = 0
        self.log: list[dict] = []  # one row per tell: budget used, best full-fidelity loss
        self.bracket_choices: list[int] = []

    @property
    def switches(self) -> dict[str, Any]:
        """The resolved settings that decide the search (mode presets applied), to record with
        results and compare when a study or a cached benchmark run is reused."""
        return {"mode": self.mode, "eta": self.eta, "grain": self.grain, "surrogate": self.surrogate,
                "fine_grained": self.fine_grained, "group_step": self.group_step, "global_sh": self.global_sh,
                "resume_paused": self.resume_paused, "flexband": self.flexband, "resume": self.resume,
                "random_fraction": self.random_fraction, "rho_threshold": self.rho_threshold,
                "n_candidates": self.n_candidates}  # not max_active_brackets: a study may gain workers

    def _levels(self) -> list[float]:
        """Rung budgets ``max_budget * eta**-k`` rounded to the nearest multiple of ``grain``."""
        # raw levels are >= min_budget >= grain and eta >= 2 apart, so rounded ones stay distinct
        raw = [self.max_budget * self.eta ** (k - self.s_max) for k in range(self.s_max + 1)]
        return [_key(math.floor(b / self.grain + 0.5) * self.grain) for b in raw]

    # -- brackets --------------------------------------------------------------------------
    def _geometry(self, s: int) -> list[tuple[float, int]]:
        n0 = int(math.ceil((self.s_max + 1) / (s + 1) * self.eta**s))
        return [(self.levels[self.s_max - s + i], max(1, int(n0 * self.eta ** (-i)))) for i in range(s + 1)]

    def _next_s(self) -> int:
        cyclic = self.s_max - (self.n_brackets % (self.s_max + 1))
        if not self.flexband or self.s_max == 0:
            return cyclic
        rel = self.reliability()
        if rel is None:  # not enough pairs yet: explore in Hyperband's order
            return cyclic
        ok = [s for s in range(self.s_max, 0, -1) if rel.get(s, -1.0) >= self.rho_threshold]
        return ok[0] if ok else 0

    def rank_correlation(self, b1: float, b2: float, min_pairs: int = 5) -> float | None:
        """Spearman correlation of the losses at budgets ``b1`` and ``b2`` over trials that
        have both (None with fewer than ``min_pairs``)."""
        pairs = [(t.loss_at(b1), t.loss_at(b2)) for t in self.trials if t.error is None]
        pairs = [p for p in pairs if p[0] is not None and p[1] is not None and math.isfinite(p[0]) and math.isfinite(p[1])]
        if len(pairs) < min_pairs:
            return None
        a, b = zip(*pairs)
        if len(set(a)) < 2 or len(set(b)) < 2:
            return None
        return float(spearmanr(a, b).statistic)

    def reliability(self) -> dict[int, float] | None:
        """For each bracket ``s >= 1``, how well its starting budget ranks like the full budget:
        the direct rank correlation if measured, else the product of adjacent-level ones."""
        adj = [self.rank_correlation(self.levels[k], self.levels[k + 1]) for k in range(self.s_max)]
        if all(a is None for a in adj):
            return None
        out = {}
        for s in range(1, self.s_max + 1):
            start = self.s_max - s
            direct = self.rank_correlation(self.levels[start], self.max_budget)
            if direct is not None:
                out[s] = direct
            else:
                chain = adj[start:]
                if all(a is not None for a in chain):
                    out[s] = float(np.prod([max(a, 0.0) for a in chain]))
        return out or None

    def _new_bracket(self) -> Bracket:
        s = self._next_s()
        self.bracket_choices.append(s)
        rungs = self._geometry(s)
        b = Bracket(self.n_brackets, s, rungs, members=[[] for _ in rungs], to_create=rungs[0][1])
        self.n_brackets += 1
        self.brackets.append(b)
        return b

    # -- ask / tell ------------------------------------------------------------------------
    def ask(self) -> Job | None:
        """The next job, or None when every runnable job is taken and no new bracket may
        start (wait for a ``tell``)."""
        for b in self.brackets:
            job = self._job_from(b)
            if job is not None:
                return job
        if len(self.brackets) < self.max_active:
            return self._job_from(self._new_bracket())
        return None

    def _job_from(self, b: Bracket) -> Job | None:
        if b.done:
            return None
        budget = b.rungs[b.rung][0]
        if not b.queue and b.rung == 0 and b.to_create > 0:  # queued work (e.g. after a reload) first
            t = Trial(len(self.trials), self._suggest())
            self.trials.append(t)
            b.to_create -= 1
            b.members[0].append(t.id)
            b.queue.append(t.id)
        if not b.queue:
            return None
        t = self.trials[b.queue.pop(0)]
        b.running.append(t.id)
        t.pending = True
        start = t.budget if self.resume else 0.0
        if self.fine_grained:
            n = int(round((budget - start) / self.grain))
            points = [_key(start + self.grain * (i + 1)) for i in range(n)]
            points[-1] = _key(budget)
        else:
            points = [_key(budget)]
        return Job(t.id, dict(t.config), start, budget, points, b.id)

    def tell(self, job: Job, measurements: dict[float, float]) -> None:
        """Record a finished job: ``{budget: loss}`` for (at least) ``job.points``."""
        t = self.trials[job.trial_id]
        got = {_key(k): float(v) for k, v in measurements.items()}
        missing = [p for p in job.points if p not in got]
        if missing:
            raise ValueError(f"trial {t.id}: no loss reported at budgets {missing} (expected {job.points})")
        bad = sorted(k for k in job.points if not math.isfinite(got[k]))
        if bad:  # a diverged run
            self.fail(job, f"non-finite loss {got[bad[0]]} at budget {bad[0]:g}", {k: got[k] for k in job.points if k < bad[0]})
            return
        for k in job.points:
            t.measurements[k] = got[k]
        t.budget = max(t.budget, job.target)
        self._finish(job, t)

    def fail(self, job: Job, error: str, measurements: dict[float, float] | None = None) -> None:
        """Record that ``job`` failed with ``error`` (its budget is charged: it was spent). The
        trial keeps the finite losses it reported, ranks last at the job's target and is
        never promoted again."""
        t = self.trials[job.trial_id]
        for k, v in (measurements or {}).items():
            t.measurements[_key(k)] = float(v)
        t.measurements[_key(job.target)] = float("inf")
        t.error = error
        self._finish(job, t)

    def requeue(self, job: Job) -> None:
        """Give ``job`` back (its worker died before reporting): the trial goes to the front of
        its bracket's queue, nothing is charged, and the next ``ask`` returns the same job."""
        t = self.trials[job.trial_id]
        b = next(b for b in self.brackets if b.id == job.bracket)
        b.running.remove(t.id)
        b.queue.insert(0, t.id)
        t.pending = False

    def _finish(self, job: Job, t: Trial) -> None:
        t.pending = False
        self.budget_used += job.cost
        b = next(b for b in self.brackets if b.id == job.bracket)
        b.running.remove(t.id)
        self._maybe_promote(b)
        self.log.append({"budget": self.budget_used, "best": self.best_loss(), "trial": t.id, "target": job.target,
                         **({"failed": t.error} if t.error is not None else {})})

    def _maybe_promote(self, b: Bracket) -> None:
        if b.queue or b.running or b.to_create:
            return
        budget = b.rungs[b.rung][0]
        b.rung += 1
        if b.done:
            self.brackets.remove(b)
            return
        n_next, next_budget = b.rungs[b.rung][1], b.rungs[b.rung][0]
        if self.global_sh:
            chosen = self._global_promotions(b, budget, next_budget, n_next)
        else:
            pool = sorted((self.trials[i] for i in b.members[b.rung - 1] if self.trials[i].error is None),
                          key=lambda t: (t.loss_at(budget), t.id))
            chosen = [t.id for t in pool[:n_next]]
        b.members[b.rung] = chosen
        b.queue = list(chosen)
        if not chosen:
            self.brackets.remove(b)

    def _global_promotions(self, b: Bracket, budget: float, next_budget: float, n_next: int) -> list[int]:
        """GloSH: rank every trial measured at ``budget`` (this and past brackets); only the
        global top ``max(n_next, ceil(pool / eta))`` may advance. This bracket's members in
        that top advance; with ``resume_paused`` free slots also resume past trials from it. A
        bracket may thus promote fewer than Hyperband would. Measured (benchmarks/hpo.py, 30
        seeds, 10 problems): filling all slots by global rank alone let past low-fidelity
        winners crowd out new configurations (Branin regret 0.64 in 10 seeds); resuming past
        trials into free slots 0.647, never resuming them (the default) 0.547."""
        pool = sorted((t for t in self.trials if t.loss_at(budget) is not None and t.error is None), key=lambda t: (t.loss_at(budget), t.id))
        top = pool[: max(n_next, math.ceil(len(pool) / self.eta))]
        queued = {i for other in self.brackets for i in other.queue}
        free = [t for t in top if not t.pending and t.budget < next_budget and t.id not in queued]
        mine = set(b.members[b.rung - 1])
        paused = [t.id for t in free if t.id not in mine] if self.resume_paused else []
        return ([t.id for t in free if t.id in mine] + paused)[:n_next]

    # -- sampling ----------------------------------------------------------------------------
    def group_budgets(self) -> list[float]:
        """The budgets of the fine-grained fidelity groups (``group_step``), ascending."""
        n = int(math.floor(self.max_budget / self.group_step + 1e-9))
        return sorted({*self.levels, *(_key(self.group_step * i) for i in range(1, n + 1) if self.group_step * i >= self.min_budget)})

    def _groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(X, y) per fidelity group, lowest first: per rung level, each trial's last measurement
        within the level; with fine-grained groups, the losses measured at each group budget."""
        if self.fine_grained and self.group_step is not None:
            picked = [[(t, t.measurements[b]) for t in self.trials if math.isfinite(t.measurements.get(b, math.inf))]
                      for b in self.group_budgets()]
        else:
            picked = []
            for k, lo in enumerate(self.levels):
                hi = self.levels[k + 1] if k + 1 < len(self.levels) else math.inf
                level = []
                for t in self.trials:
                    inside = [b for b in t.measurements if lo <= b < hi and math.isfinite(t.measurements[b])]
                    if inside:
                        level.append((t, t.measurements[max(inside)]))
                picked.append(level)
        return [(np.array([self.space.encode(t.config) for t, _ in g]).reshape(len(g), self.space.dim), np.array([y for _, y in g]))
                for g in picked]

    def _model(self):
        """(fitted surrogate, standardised losses of the fidelity it targets), or None while
        no fidelity has enough points (BOHB's ``dim + 1`` for ``single``, 3 for the ensemble)."""
        groups = self._groups()
        need = self.space.dim + 1 if self.surrogate == "single" else 3
        ok = [g for g in groups if len(g[1]) >= need]
        if not ok:
            return None
        seed = int(self.rng.integers(2**31))
        top = standardise(ok[-1][1])
        if self.surrogate == "single":
            return ForestSurrogate(seed).fit(ok[-1][0], top), top
        return MultiFidelityEnsemble(seed).fit(groups), top

    def _suggest(self) -> Config:
        if self.surrogate == "none" or self.rng.random() < self.random_fraction:
            return self.space.sample(self.rng)
        fitted = self._model()
        if fitted is None:
            return self.space.sample(self.rng)
        model, y = fitted
        cands = [self.space.sample(self.rng) for _ in range(self.n_candidates)]
        best_trials = sorted((t for t in self.trials if t.measurements), key=lambda t: min(t.measurements.values()))[:5]
        for t in best_trials:
            cands += [self.space.neighbour(t.config, self.rng, 0.1) for _ in range(self.n_candidates // 10)]
        x = np.stack([self.space.encode(c) for c in cands])
        mean, var = model.predict(x)
        ei = expected_improvement(mean, var, float(y.min()))
        return cands[int(np.argmax(ei))]

    # -- results -----------------------------------------------------------------------------
    def failed(self) -> list[Trial]:
        """The trials that failed, with their errors."""
        return [t for t in self.trials if t.error is not None]

    def best_loss(self) -> float:
        """Lowest loss measured at the full budget (inf before any)."""
        best = self.best()
        return best[1] if best is not None else math.inf

    def best(self) -> tuple[Config, float] | None:
        """The best configuration at the full budget, with its loss."""
        done = [t for t in self.trials if t.loss_at(self.max_budget) is not None and t.error is None]
        if not done:
            return None
        t = min(done, key=lambda t: t.loss_at(self.max_budget))
        return dict(t.config), t.loss_at(self.max_budget)

    def run(self, objective: Callable[[Job], dict[float, float]], total_budget: float) -> tuple[Config, float] | None:
        """Sequential driver: ask, evaluate, tell until ``total_budget`` is used."""
        while self.budget_used < total_budget:
            job = self.ask()
            if job is None:
                raise RuntimeError("no job available in sequential run (max_active_brackets too small?)")
            self.tell(job, objective(job))
        return self.best()

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "trials": [{"id": t.id, "config": t.config, "measurements": sorted(t.measurements.items()), "budget": t.budget,
                        "error": t.error} for t in self.trials],
            "brackets": [{**b.__dict__, "queue": b.running + b.queue, "running": []} for b in self.brackets],
            "budget_used": self.budget_used, "n_brackets": self.n_brackets, "log": self.log,
            "bracket_choices": self.bracket_choices, "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved study; jobs that were running when it was saved are queued again."""
        self.trials = [Trial(d["id"], d["config"], {_key(b): v for b, v in d["measurements"]}, d["budget"], error=d.get("error"))
                       for d in state["trials"]]
        self.brackets = [Bracket(**{**d, "rungs": [tuple(r) for r in d["rungs"]]}) for d in state["brackets"]]
        self.budget_used, self.n_brackets, self.log = state["budget_used"], state["n_brackets"], state["log"]
        self.bracket_choices = state["bracket_choices"]
        self.rng.bit_generator.state = state["rng"]

    def save(self, path: str | Path) -> None:
        """Write the study as JSON (atomically: a crash never leaves half a file)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.state_dict()))
        os.replace(tmp, path)

    def load(self, path: str | Path) -> "FlexHB":
        self.load_state_dict(json.loads(Path(path).read_text()))
        return self
