"""AdaS&S core (no Lightning): space, penalty, controller, samplers, search, supernet."""

import math

import numpy as np
import pytest
import torch

from lightning_des.data.synthetic import SyntheticSpec, make_synthetic
from lightning_des.adass import (
    SearchOptions,
    AdaptiveSampler,
    ReinforceController,
    ResourcePenalty,
    SizeSpace,
    SupernetEmbedding,
    UniformSampler,
    fit_to_budget,
    search_sizes,
)

SPACE = SizeSpace(tuple(f"f{i}" for i in range(8)), (945, 1654, 4, 23, 384, 9, 75, 21))


def test_space_accounting_and_errors():
    s = SizeSpace(("a", "b"), (10, 3), (0, 2, 8))
    assert s.params((2, 1)) == 10 * 8 + 3 * 2 and s.field_params((0, 2)) == [0, 24]
    assert s.sizes((0, 2)) == {"a": 0, "b": 8} and s.choice_of({"a": 0, "b": 8}) == (0, 2)
    assert s.uniform_params(16) == 13 * 16 and s.largest() == (2, 2)
    with pytest.raises(ValueError, match="ascending"):
        SizeSpace(("a",), (3,), (4, 2))
    with pytest.raises(ValueError, match="one cardinality per field"):
        SizeSpace(("a", "b"), (3,))
    with pytest.raises(ValueError, match=r"not candidates"):
        s.choice_of({"a": 3, "b": 8})
    with pytest.raises(ValueError, match="candidate indices"):
        s.params((0, 5))


def test_penalty_zero_under_budget_and_shared_by_memory():
    pen = ResourcePenalty(budget=100, strength=0.5)
    assert pen.total([40, 60]) == 0.0 and pen.field_penalties([40, 60]) == [0.0, 0.0]
    assert pen.total([150, 50]) == pytest.approx(0.5)  # 100% over
    shares = pen.field_penalties([150, 50, 0])
    assert shares[2] == 0.0 and shares[0] == pytest.approx(3 * shares[1]) and sum(shares) / 3 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="budget must be > 0"):
        ResourcePenalty(0)


def test_controller_learns_separable_best():
    """Reward sum_f u_f[c_f]: the policy's mode becomes the per-field argmax."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(5, 4, generator=g, dtype=torch.float64) * 0.01  # AUC-sized differences
    ctrl = ReinforceController(5, 4, lr=0.3, generator=g)
    for _ in range(300):
        a = ctrl.sample(8)
        r = u.gather(1, a.t()).t().sum(1, keepdim=True).expand(-1, 5)
        ctrl.update(a, r)
    assert ctrl.mode() == tuple(u.argmax(1).tolist())
    assert (ctrl.probs.max(1).values > 0.5).all()


def _utility(weights):
    def util(choice):
        return 0.75 + sum(w * math.log1p(SPACE.candidates[i]) / math.log1p(64) for w, i in zip(weights, choice))

    return util


def _optimum(weights, budget):
    """Knapsack over fields by dynamic programming (the plain reference)."""
    best = {0: 0.0}
    for f, w in enumerate(weights):
        nxt = {}
        for p, u in best.items():
            for d in SPACE.candidates:
                q = p + SPACE.cardinalities[f] * d
                v = u + w * math.log1p(d) / math.log1p(64)
                if q <= budget and nxt.get(q, -1) < v:
                    nxt[q] = v
        best = nxt
    return 0.75 + max(best.values())


def test_search_meets_budget_and_beats_random_search():
    budget = SPACE.uniform_params(16) // 2
    regret = {"reinforce": [], "random": []}
    for seed in range(3):
        w = np.random.default_rng(seed).random(8) * 0.01
        util, opt = _utility(w), _optimum(w, budget)
        for method in regret:
            r = search_sizes(util, SPACE, budget, SearchOptions(method=method, iterations=300), seed=seed)
            assert r.params == SPACE.params(r.choice) <= budget and r.score == pytest.approx(util(r.choice))
            regret[method].append(opt - r.score)
    assert min(regret["reinforce"] + regret["random"]) >= -1e-12  # the optimum is an upper bound
    assert np.mean(regret["reinforce"]) < 0.5 * np.mean(regret["random"]), regret


def test_no_penalty_search_is_shrunk_into_budget():
    util = _utility([0.01] * 8)  # monotone: without a penalty the policy goes to the largest sizes
    budget = SPACE.uniform_params(4)
    r = search_sizes(util, SPACE, budget, SearchOptions(penalty=0.0, iterations=50), seed=0)
    assert r.params <= budget
    assert fit_to_budget(SPACE.largest(), SPACE, budget, util) == r.choice or r.params <= budget


def test_fit_to_budget_drops_least_useful_parameters_first():
    s = SizeSpace(("big", "small"), (1000, 10), (0, 4, 8))
    util = lambda c: [0, 1, 2][c[0]] * 0.001 + [0, 1, 2][c[1]] * 0.001  # noqa: E731  equal gains
    # per parameter saved, shrinking the big table costs far less
    assert fit_to_budget((2, 2), s, 4100, util) == (1, 2)


def test_uniform_sampler_probabilities():
    smp = UniformSampler(3, 4, torch.Generator().manual_seed(0))
    a = smp.sample(4000)
    assert a.shape == (4000, 3)
    freq = torch.stack([(a == c).double().mean(0) for c in range(4)], 1)
    assert torch.allclose(freq, torch.full((3, 4), 0.25, dtype=torch.float64), atol=0.03)


def test_adaptive_sampler_favours_undertrained_underperforming_and_important():
    smp = AdaptiveSampler(2, 4, torch.Generator().manual_seed(0), warmup_steps=2, beta=0.0, epsilon=0.0)
    assert torch.allclose(smp.probs(), torch.full((2, 4), 0.25, dtype=torch.float64))  # warm-up
    # field 0: candidate 3 has the highest loss among non-zero widths; dropping field 0 hurts a lot
    # field 1: all widths equal, dropping it costs nothing
    choice = torch.tensor([[c, c] for c in range(4)] * 4)
    loss0 = torch.tensor([1.0, 0.5, 0.5, 0.8])
    for _ in range(3):
        smp.update(choice, loss0[choice[:, 0]])
    smp.loss[1] = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    p = smp.probs()
    assert torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    assert p[0, 3] > p[0, 1] and p[0, 1] == pytest.approx(p[0, 2].item())  # under-performing drawn more
    assert p[0, 0] < p[1, 0]  # the important field is dropped less
    assert smp.importance().tolist() == pytest.approx([1.0, 0.0])
    # under-trained: with equal losses, the candidate with fewer samples is favoured
    smp2 = AdaptiveSampler(1, 3, warmup_steps=0, epsilon=0.0, has_drop=False)
    smp2.update(torch.tensor([[0]] * 10 + [[1]] * 10 + [[2]] * 2), torch.full((22,), 0.5))
    p2 = smp2.probs()[0]
    assert p2[2] > p2[0] and p2[0] == pytest.approx(p2[1].item())
    # ... where "under-trained" means per parameter: equal counts leave the wider table behind
    smp4 = AdaptiveSampler(1, 3, warmup_steps=0, epsilon=0.0, widths=(0, 2, 8), gamma=1.0)
    smp4.update(torch.tensor([[0]] * 10 + [[1]] * 10 + [[2]] * 10), torch.full((30,), 0.5))
    assert smp4.probs()[0, 2] > smp4.probs()[0, 1]
    smp5 = AdaptiveSampler(1, 3, warmup_steps=0, epsilon=0.0, widths=(0, 2, 8), gamma=0.0)
    smp5.update(torch.tensor([[0]] * 10 + [[1]] * 10 + [[2]] * 10), torch.full((30,), 0.5))
    assert smp5.probs()[0, 2] == pytest.approx(smp5.probs()[0, 1].item())
    # the floor keeps every candidate alive
    smp3 = AdaptiveSampler(2, 4, warmup_steps=0, epsilon=0.2)
    smp3.counts, smp3.loss, smp3.steps = smp.counts.clone(), smp.loss.clone(), 5
    assert (smp3.probs() >= 0.2 / 4 - 1e-12).all()


@pytest.fixture(scope="module")
def kjt_batch():
    spec = SyntheticSpec(num_rows=32, num_dense=2, cardinalities=(7, 11), multi_hot=3, seed=0)
    return make_synthetic(spec).batch(np.arange(6), spec.fields)


def test_supernet_matches_dense_reference(kjt_batch):
    """Candidate outputs equal P_fd (sum or mean of table rows) computed by hand; training
    mode picks each sample's own candidate; width 0 is a zero vector."""
    space = SizeSpace(("C1", "C2"), (7, 11), (0, 2, 4))
    torch.manual_seed(0)
    sn = SupernetEmbedding(space, dim=3, multi_hot=("C2",))
    kjt = kjt_batch.sparse_features
    outs = sn.candidate_outputs(kjt)
    for f, mode in (("C1", "sum"), ("C2", "mean")):
        jt = kjt[f]
        assert outs[f].shape == (6, 3, 3) and outs[f][:, 0].abs().max() == 0
        for ci, d in ((1, 2), (2, 4)):
            w, p = sn.embedding_bags[f"{f}_d{d}"].weight, sn.projections[f"{f}_d{d}"].weight
            for b, ids in enumerate(torch.split(jt.values(), jt.lengths().tolist())):
                rows = w[ids]
                pooled = (rows.sum(0) if mode == "sum" else rows.mean(0)) if len(ids) else torch.zeros(d)
                torch.testing.assert_close(outs[f][b, ci], p @ pooled)
    sn.train()
    sn.choice = torch.tensor([[0, 1], [1, 2], [2, 0], [2, 2], [1, 1], [0, 0]])
    kt = sn(kjt).to_dict()
    for b in range(6):
        for i, f in enumerate(("C1", "C2")):
            torch.testing.assert_close(kt[f][b], outs[f][b, sn.choice[b, i]])
    kt["C1"].sum().backward()
    assert sn.embedding_bags["C1_d2"].weight.grad.abs().sum() > 0
    assert sn.embedding_bags["C2_d2"].weight.grad.abs().sum() == 0  # C2 took no part in the loss
    sn.eval()
    kt = sn(kjt).to_dict()
    torch.testing.assert_close(kt["C2"], outs["C2"][:, 2].detach())  # eval: the largest
    sn.train()
    sn.choice = torch.zeros(5, 2, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"\(6, 2\) index matrix"):
        sn(kjt)


@pytest.mark.parametrize("candidates", [(0, 2, 8), (2, 4, 8)])
@pytest.mark.parametrize("method", ["reinforce", "random"])
def test_budget_guarantee_at_the_edges(candidates, method):
    """Below the smallest feasible assignment: refused with the minimum; at it and just above:
    within budget and at least one field kept (the old code returned an over-budget choice when
    the smallest candidate was > 0, and random search failed on an empty feasible set)."""
    space = SizeSpace(("a", "b", "c"), (50, 7, 30), candidates)
    minimum = space.min_params()
    assert minimum == (7 * 2 if candidates[0] == 0 else 87 * 2)
    util = lambda c: sum(space.widths(c)) / 100  # noqa: E731  (more width scores better)
    with pytest.raises(ValueError, match=rf"below the smallest feasible assignment: {minimum} parameters"):
        search_sizes(util, space, minimum - 1, SearchOptions(method=method, iterations=5))
    for budget in (minimum, minimum + 20, space.params(space.largest())):
        r = search_sizes(util, space, budget, SearchOptions(method=method, iterations=20), seed=1)
        assert r.params <= budget and any(w > 0 for w in r.sizes.values()), (budget, r.sizes)
    with pytest.raises(ValueError, match="below the smallest feasible assignment"):
        fit_to_budget(space.largest(), space, minimum - 1, util)
    assert fit_to_budget((0, 0, 0), space, minimum, util) == space.smallest() or candidates[0] > 0


def test_mixed_dimension_baseline_follows_dlrm_and_fits_the_budget():
    from lightning_des.adass.baselines import md_widths, mixed_dimension_choice

    n = [10, 100, 1000, 5000]
    d = md_widths(n, 20000, 0.3)
    assert sum(a * b for a, b in zip(n, d)) == pytest.approx(20000)  # DLRM's lambda: exactly B unrounded
    assert d[0] / d[2] == pytest.approx((1000 / 10) ** 0.3)  # d ~ n^-alpha
    space = SizeSpace(("a", "b", "c", "e"), n, (0, 2, 4, 8, 16, 32, 64))
    for budget, alpha in ((20000, 0.3), (3000, 0.5), (100000, 0.1), (500, 0.3)):
        got = mixed_dimension_choice(space, budget, alpha)
        assert space.params(got) <= budget and space.keeps_a_field(got)
        widths = space.widths(got)
        assert widths == sorted(widths, reverse=True)  # more rows, never a wider embedding
        # reference: the last rounded assignment that fits on a dense grid of lambda scales
        fits = [c for c in (tuple(min(range(7), key=lambda i: (abs(space.candidates[i] - w), space.candidates[i]))
                                  for w in md_widths(n, s, alpha)) for s in np.linspace(1, 40 * budget, 40000))
                if space.params(c) <= budget]
        assert got == fits[-1]
    assert space.widths(mixed_dimension_choice(space, 6115 * 4, 0.0)) == [4, 4, 4, 4]  # alpha 0: uniform
    with pytest.raises(ValueError, match="below the smallest feasible assignment"):
        mixed_dimension_choice(space, 10, 0.3)
    with pytest.raises(ValueError, match="alpha must be in"):
        md_widths(n, 100, 1.5)
