"""FlexHB core: search space, bracket geometry, SH and GloSH promotions, fine-grained
reporting, resume accounting, persistence, FlexBand, and a quality check against random."""

import math

import numpy as np
import pytest

from lightning_des.tuner.benchmarks import BRANIN_MIN, BRANIN_SPACE, branin_objective
from lightning_des.tuner.flexhb import FlexHB
from lightning_des.tuner.space import Categorical, Float, Int, SearchSpace

SPACE = SearchSpace.from_dict({
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
})


def test_space_sampling_encoding_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = SPACE.sample(rng)
        SPACE.validate(c)
        assert SPACE.decode(SPACE.encode(c)) == pytest.approx(c)
        SPACE.validate(SPACE.neighbour(c, rng, 0.5))
    assert SPACE.dim == 1 + 1 + 3
    counts = np.bincount([SPACE.sample(rng)["layers"] for _ in range(4000)], minlength=5)[1:]
    assert counts.min() > 850  # each integer equally likely
    with pytest.raises(ValueError, match="parameter 'x': type must be one of"):
        SearchSpace.from_dict({"x": {"type": "double", "low": 0, "high": 1}})
    with pytest.raises(ValueError, match=r"parameter 'x' \(float\): unknown keys \['hihg'\]"):
        SearchSpace.from_dict({"x": {"type": "float", "low": 0, "hihg": 1}})
    with pytest.raises(ValueError, match="low > 0 when log"):
        Float(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="at least two distinct choices"):
        Categorical(("a",))
    with pytest.raises(ValueError, match=r"out of range \{'layers': 7\}"):
        SPACE.validate({"lr": 0.01, "layers": 7, "act": "relu"})
    assert Int(1, 4).contains(3) and not Int(1, 4).contains(3.5)


def test_hyperband_geometry():
    t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband")
    assert t.s_max == 3 and t.levels == [1.0, 3.0, 9.0, 27.0]
    assert t._geometry(3) == [(1.0, 27), (3.0, 9), (9.0, 3), (27.0, 1)]
    assert t._geometry(0) == [(27.0, 4)]
    assert FlexHB(BRANIN_SPACE, 1, 27, mode="random").levels == [27.0]


def _loss_is_x1(job):
    return {p: job.config["x1"] + 1.0 / p for p in job.points}  # same ranking at every budget


def test_local_successive_halving_promotes_the_best_of_its_bracket():
    t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", seed=0)
    jobs = []
    while t.n_brackets < 2:  # the whole first bracket (s = 3)
        job = t.ask()
        jobs.append(job)
        t.tell(job, _loss_is_x1(job))
    first = [j for j in jobs if j.bracket == 0]
    by_budget = {b: sorted(j.trial_id for j in first if j.target == b) for b in (1.0, 3.0, 9.0, 27.0)}
    assert [len(v) for v in by_budget.values()] == [27, 9, 3, 1]
    ranked = sorted(by_budget[1.0], key=lambda i: t.trials[i].config["x1"])
    assert by_budget[3.0] == sorted(ranked[:9]) and by_budget[27.0] == [ranked[0]]
    # resumed jobs start where the trial stopped and are charged only the increment
    assert all(j.start == (0.0 if j.target == 1.0 else j.target / 3) for j in first)
    assert t.budget_used == pytest.approx(sum(j.cost for j in jobs))


def test_global_sh_with_resume_paused_resumes_trials_of_past_brackets():
    t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", global_sh=True, resume_paused=True, seed=0)
    brackets_of = {}
    for _ in range(200):
        job = t.ask()
        brackets_of.setdefault(job.trial_id, set()).add(job.bracket)
        t.tell(job, _loss_is_x1(job))
    assert any(len(b) > 1 for b in brackets_of.values())  # a trial continued in a later bracket
    # with the same ranking at every budget, the best trial seen at budget 1 reaches the top
    best = min((tr for tr in t.trials if tr.loss_at(1.0) is not None), key=lambda tr: tr.config["x1"])
    assert best.loss_at(27.0) is not None
    # the switch needs Global SH: without it there is nothing to resume into
    with pytest.raises(ValueError, match="resume_paused=True needs global_sh"):
        FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", resume_paused=True)


def test_fine_grained_points_and_restart_mode():
    fine = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="flexhb", flexband=False, seed=0)
    coarse = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", resume=False, seed=0)
    for t in (fine, coarse):
        while t.n_brackets < 2:
            job = t.ask()
            if t is fine and job.start == 3.0:
                assert job.points == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
            if t is coarse:
                assert job.start == 0.0 and job.points == [job.target]
            t.tell(job, _loss_is_x1(job))
    assert coarse.budget_used > fine.budget_used  # restarts pay for the lower budgets again
    with pytest.raises(ValueError, match=r"no loss reported at budgets \[27.0\]"):
        f = FlexHB(BRANIN_SPACE, 1, 27, mode="random")
        f.tell(f.ask(), {3.0: 1.0})


def test_diverged_trial_ranks_last():
    t = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode="hyperband", seed=0)
    job = t.ask()
    t.tell(job, {job.target: float("nan")})
    assert t.trials[job.trial_id].loss_at(job.target) == math.inf
    assert t.trials[job.trial_id].error == "non-finite loss nan at budget 1"


def test_failed_trials_are_recorded_never_promoted_and_the_study_goes_on():
    obj = branin_objective()
    t = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode="hyperband", seed=0)
    first = [t.ask() for _ in range(9)]  # bracket s=2: nine trials at budget 1
    for i, job in enumerate(first):
        if i < 3:
            t.fail(job, f"RuntimeError: boom {i}")
        else:
            t.tell(job, obj(job))
    assert [tr.id for tr in t.failed()] == [0, 1, 2] and t.trials[0].error == "RuntimeError: boom 0"
    assert t.budget_used == 9  # failed jobs are charged: the budget was spent
    promoted = []
    while t.budget_used < 9 + 3 * 2 + 6:  # the rest of the bracket: 3 trials to budget 3, one to 9
        job = t.ask()
        promoted.append(job.trial_id)
        t.tell(job, obj(job))
    assert len(promoted) == 4 and not set(promoted) & {0, 1, 2}
    assert t.best() is not None and t.best()[1] < math.inf


def test_requeued_job_comes_back_unchanged_and_uncharged():
    t = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode="flexhb", seed=0)
    job = t.ask()
    t.requeue(job)
    again = t.ask()
    assert (again.trial_id, again.start, again.target, again.points) == (job.trial_id, job.start, job.target, job.points)
    assert t.budget_used == 0 and len(t.trials) == 1


def test_rung_budgets_are_rounded_to_the_grain_and_bad_budgets_refused():
    t = FlexHB(BRANIN_SPACE, 1, 10, eta=3, mode="hyperband", seed=0)
    assert t.levels == [1.0, 3.0, 10.0]  # 1.11, 3.33, 10 rounded to grain 1
    obj = branin_objective()
    while t.budget_used < 40:  # every job trains to a whole number of grains
        job = t.ask()
        assert all(float(p).is_integer() for p in job.points) and float(job.target).is_integer()
        t.tell(job, obj(job))
    assert FlexHB(BRANIN_SPACE, 2, 27, eta=3, grain=0.5).levels[0] == 3.0
    with pytest.raises(ValueError, match="min_budget=1.5 is not a multiple of grain=1"):
        FlexHB(BRANIN_SPACE, 1.5, 9, eta=3, grain=1)
    with pytest.raises(ValueError, match="max_budget=10 is not a multiple of grain=4"):
        FlexHB(BRANIN_SPACE, 4, 10, eta=2, grain=4)
    assert FlexHB(BRANIN_SPACE, 2, 6, eta=2, grain=2).levels == [4.0, 6.0]  # 3 -> 4 (half up)


@pytest.mark.parametrize("mode", ["hyperband", "flexhb"])
def test_saved_study_resumes_identically(mode, tmp_path):
    obj = branin_objective()
    full = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode=mode, seed=3)
    full.run(obj, 120)
    part = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode=mode, seed=3)
    part.run(obj, 50)
    pending = part.ask()  # interrupted while a job was running: it is queued again on load
    part.save(tmp_path / "study.json")
    resumed = FlexHB(BRANIN_SPACE, 1, 9, eta=3, mode=mode, seed=3).load(tmp_path / "study.json")
    again = resumed.ask()
    assert (again.trial_id, again.target) == (pending.trial_id, pending.target)
    resumed.tell(again, obj(again))
    resumed.run(obj, 120)
    assert [tr.config for tr in resumed.trials] == [tr.config for tr in full.trials]
    assert resumed.best_loss() == full.best_loss()


def test_flexband_follows_rank_correlation():
    def correlated(job):
        return {p: job.config["x1"] for p in job.points}

    def anti(job):  # low budgets rank in reverse
        return {p: job.config["x1"] * (1 if p == 27 else -1) for p in job.points}

    picks = {}
    for name, obj in (("correlated", correlated), ("anti", anti)):
        t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", fine_grained=True, flexband=True, seed=0)
        t.run(obj, 27 * 30)
        picks[name] = t.bracket_choices[4:]  # after one exploratory Hyperband cycle
    assert set(picks["correlated"]) == {3}
    assert set(picks["anti"]) == {0}


def test_model_based_modes_beat_random_search():
    """Over 5 seeds at 10 full-budget equivalents, FlexHB and BOHB end closer to Branin's
    minimum than random search (the CI quality check; benchmarks/ has the full comparison)."""
    regret = {}
    for mode in ("random", "bohb", "flexhb"):
        r = []
        for seed in range(5):
            t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode=mode, seed=seed)
            t.run(branin_objective(), 270)
            r.append(t.best_loss() - BRANIN_MIN)
        regret[mode] = float(np.mean(r))
    assert regret["flexhb"] < 0.5 * regret["random"] and regret["bohb"] < 0.5 * regret["random"], regret


def test_fine_grained_groups_hold_the_losses_measured_at_each_group_budget():
    """``group_step``: one fidelity group per rung level and per multiple of the step, each
    holding exactly the losses measured at that budget (non-finite ones left out)."""
    from lightning_des.tuner.flexhb import Trial

    t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, group_step=3, seed=0)
    assert t.group_budgets() == [1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0]
    rng = np.random.default_rng(0)
    configs = [BRANIN_SPACE.sample(rng) for _ in range(3)]
    t.trials = [Trial(0, configs[0], {1.0: 5.0, 2.0: 4.0, 3.0: 3.0}),
                Trial(1, configs[1], {1.0: 6.0, 2.0: 5.5, 3.0: 5.0, 4.0: 4.5, 5.0: 4.4, 6.0: 4.2}),
                Trial(2, configs[2], {1.0: float("inf")})]
    groups = dict(zip(t.group_budgets(), t._groups()))
    assert groups[1.0][1].tolist() == [5.0, 6.0] and groups[3.0][1].tolist() == [3.0, 5.0] and groups[6.0][1].tolist() == [4.2]
    assert np.allclose(groups[6.0][0], [BRANIN_SPACE.encode(configs[1])]) and len(groups[27.0][1]) == 0
    # default: one group per rung level with each trial's last measurement inside the level
    t.group_step = None
    by_level = dict(zip(t.levels, t._groups()))
    assert by_level[3.0][1].tolist() == [3.0, 4.2] and by_level[1.0][1].tolist() == [4.0, 5.5]
    with pytest.raises(ValueError, match="group_step=1.5 is not a positive multiple of grain=1"):
        FlexHB(BRANIN_SPACE, 1, 27, group_step=1.5)


def test_global_sh_by_default_only_filters_a_brackets_own_members():
    t = FlexHB(BRANIN_SPACE, 1, 27, eta=3, mode="hyperband", global_sh=True, seed=0)  # resume_paused=False
    brackets_of, jobs = {}, []
    for _ in range(200):
        job = t.ask()
        brackets_of.setdefault(job.trial_id, set()).add(job.bracket)
        jobs.append(job)
        t.tell(job, _loss_is_x1(job))
    assert all(len(b) == 1 for b in brackets_of.values())  # no trial continued in a later bracket
    # a promoted trial was in the global top 1/eta of the trials measured at the budget below when it was promoted
    for i, job in enumerate(jobs):
        if job.start > 0:
            pool = sorted(t.trials[j.trial_id].config["x1"] for j in jobs[:i] if j.target == job.start)
            assert t.trials[job.trial_id].config["x1"] <= pool[math.ceil(len(pool) / 3) - 1]
