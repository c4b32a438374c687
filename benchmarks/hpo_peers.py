"""Peer tuners for benchmarks/hpo.py, each driven to the same :class:`Meter` budget.

Needs the `.venv-hpo` environment (scripts/install_hpo.sh). Trial semantics, charged as such:
Optuna (TPE + HyperbandPruner) trains a trial step by step and stops it when pruned, so it pays
each step once; SMAC3 (multi-fidelity facade, Hyperband), DEHB and HpBandSter (BOHB) call the
objective with a budget and the objective trains from scratch, so a promotion pays the whole
new budget (restart).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time

from hpo_problems import Exhausted, Meter, Problem

from lightning_des.tuner.space import Categorical, Float, Int, SearchSpace


def configspace(space: SearchSpace, seed: int, index_choices: bool = False):
    """The space as a ConfigSpace; ``index_choices`` gives a categorical as the integer index
    of its choice (HpBandSter sends configurations through Pyro, which cannot serialise the
    numpy scalars ConfigSpace returns for categoricals; its KDE then treats the index as
    ordinal). :func:`from_index_choices` maps them back."""
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=seed)
    for name, p in space.params.items():
        if isinstance(p, Categorical):
            if index_choices:
                cs.add(CS.Integer(name, (0, len(p.choices) - 1)))
            else:
                cs.add(CS.Categorical(name, list(p.choices)))
        elif isinstance(p, Int):
            cs.add(CS.Integer(name, (int(p.low), int(p.high)), log=p.log))
        elif isinstance(p, Float):
            cs.add(CS.Float(name, (p.low, p.high), log=p.log))
    return cs


def from_index_choices(space: SearchSpace, config: dict) -> dict:
    """Undo ``configspace(..., index_choices=True)`` for one configuration."""
    out = dict(config)
    for name, q in space.params.items():
        if isinstance(q, Categorical):
            out[name] = q.choices[int(config[name])]
    return out


def _evaluate(p: Problem, meter: Meter, config: dict, budget: float) -> float:
    """One restart-style evaluation: train from scratch to ``budget``, pay ``budget``."""
    meter.check()
    t0 = time.perf_counter()
    losses, _ = p.evaluate(config, [budget], None)
    meter.eval_s += time.perf_counter() - t0
    meter.charge(budget, losses)
    return losses[budget]


def run_optuna(p: Problem, seed: int, meter: Meter) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=p.min_budget, max_resource=p.max_budget, reduction_factor=3))

    def objective(trial: optuna.Trial) -> float:
        config = {}
        for name, q in p.space.params.items():
            if isinstance(q, Categorical):
                config[name] = trial.suggest_categorical(name, list(q.choices))
            elif isinstance(q, Int):
                config[name] = trial.suggest_int(name, int(q.low), int(q.high), log=q.log)
            else:
                config[name] = trial.suggest_float(name, q.low, q.high, log=q.log)
        state, prev, loss = None, 0.0, math.inf
        for step in p.steps:
            meter.check()
            t0 = time.perf_counter()
            losses, state = p.evaluate(config, [step], state)
            meter.eval_s += time.perf_counter() - t0
            meter.charge(step - prev, losses)
            prev, loss = step, losses[step]
            trial.report(loss, int(step))
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    try:
        study.optimize(objective, n_trials=10**6)
    except Exhausted:
        pass
    return len(study.trials)


def run_smac(p: Problem, seed: int, meter: Meter) -> int:
    from smac import MultiFidelityFacade, Scenario
    from smac.intensifier.hyperband import Hyperband
    from smac.runhistory.dataclasses import TrialValue

    with tempfile.TemporaryDirectory() as tmp:
        scenario = Scenario(configspace(p.space, seed), deterministic=True, n_trials=10**6, min_budget=p.min_budget,
                            max_budget=p.max_budget, seed=seed, output_directory=tmp)
        smac = MultiFidelityFacade(scenario, lambda config, seed=0, budget=0.0: 0.0, intensifier=Hyperband(scenario, eta=3),
                                   overwrite=True, logging_level=logging.ERROR)
        configs = set()
        try:
            while True:
                info = smac.ask()
                configs.add(info.config)
                loss = _evaluate(p, meter, dict(info.config), float(info.budget))
                smac.tell(info, TrialValue(cost=loss))
        except Exhausted:
            pass
    return len(configs)


def run_dehb(p: Problem, seed: int, meter: Meter) -> int:
    from dehb import DEHB

    logging.getLogger("dehb").setLevel(logging.ERROR)
    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    cs = configspace(p.space, seed)
    with tempfile.TemporaryDirectory() as tmp:
        dehb = DEHB(cs=cs, dimensions=len(cs), min_fidelity=p.min_budget, max_fidelity=p.max_budget, eta=3, n_workers=1,
                    seed=seed, output_path=tmp, save_freq=None)
        configs = set()
        try:
            while True:
                job = dehb.ask()
                config = dict(job["config"])  # a ConfigSpace Configuration (configspace=True)
                configs.add(job["config_id"])
                loss = _evaluate(p, meter, config, float(job["fidelity"]))
                dehb.tell(job, {"fitness": loss, "cost": float(job["fidelity"])})
        except Exhausted:
            pass
    return len(configs)


def run_hpbandster(p: Problem, seed: int, meter: Meter) -> int:
    import hpbandster.core.nameserver as hpns
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB

    for name in ("hpbandster", "Pyro4", "BOHB", "Worker", "Master"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import numpy as np

    np.random.seed(seed)  # BOHB's KDE sampling draws from the global RNG
    configs = set()

    class W(Worker):
        def compute(self, config, budget, **kwargs):
            configs.add(tuple(sorted(config.items())))
            if meter.exhausted:  # the last iteration drains without being charged or counted
                return {"loss": 1e9, "info": {}}
            try:
                return {"loss": _evaluate(p, meter, from_index_choices(p.space, config), float(budget)), "info": {}}
            except Exhausted:
                return {"loss": 1e9, "info": {}}

    run_id = f"hpo-{p.name}-{seed}"
    ns = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = ns.start()
    w = W(run_id=run_id, nameserver=host, nameserver_port=port)
    w.run(background=True)
    bohb = BOHB(configspace=configspace(p.space, seed, index_choices=True), run_id=run_id, nameserver=host, nameserver_port=port,
                min_budget=p.min_budget, max_budget=p.max_budget, eta=3, ping_interval=3600)
    try:
        while not meter.exhausted:
            bohb.run(n_iterations=1)
    finally:
        bohb.shutdown(shutdown_workers=True)
        ns.shutdown()
    return len(configs)


PEERS = {"optuna": run_optuna, "smac": run_smac, "dehb": run_dehb, "hpbandster": run_hpbandster}
