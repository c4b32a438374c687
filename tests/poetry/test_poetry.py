"""Planning-based poetry: TextRank against dense PageRank, the planner on a hand-built corpus,
rhyme/tone constraints, constrained beam search against exhaustive search, the corpus and data
module, a toy generator that overfits a few poems, and the CLI (fit + poem)."""

import gzip
import itertools

import numpy as np
import pytest
import torch

from lightning_des.cli import main
from lightning_des.data.poems import (BOS, EOS, SEP, SPECIALS, KeywordIndex, MalformedPoemError, PoetryDataModule,
                                      collate, load_quatrains, split_poems)
from lightning_des.models.poetry import LineGenerator, Planner, PlanningPoetGenerator, textrank
from lightning_des.models.poetry.constraints import QuatrainConstraints, rhyme_and_tone, rhymes
from lightning_des.models.rnn import beam_search

from tests.test_cli import POETRY


def dense_pagerank(units, d=0.85):
    words = sorted({w for u in units for w in u})
    ix = {w: i for i, w in enumerate(words)}
    W = np.zeros((len(words), len(words)))
    for u in units:
        for a, b in itertools.combinations(u, 2):
            if a != b:
                W[ix[a], ix[b]] += 1
                W[ix[b], ix[a]] += 1
    P = W / np.maximum(W.sum(1, keepdims=True), 1)
    # fixed point of s = (1-d) + d P^T s, solved exactly
    s = np.linalg.solve(np.eye(len(words)) - d * P.T, np.full(len(words), 1 - d))
    return {w: s[ix[w]] for w in words}


def test_textrank_matches_dense_pagerank_and_ranks_the_hub_first():
    units = [["月", "山", "水"], ["月", "风"], ["月", "花", "山"], ["酒", "月"], ["山", "云"], ["花", "风"]]
    got, ref = textrank(units), dense_pagerank(units)
    assert set(got) == set(ref)
    for w in ref:
        assert got[w] == pytest.approx(ref[w], rel=1e-6)
    ranked = sorted(got, key=got.get, reverse=True)
    assert ranked[:2] == ["月", "山"]
    with pytest.raises(ValueError, match="damping"):
        textrank(units, damping=1.0)


def test_planner_extracts_known_keywords_first_and_expands():
    scores = textrank([["明月", "故乡"], ["明月", "秋风"], ["明月", "山"], ["秋风", "落叶"], ["故乡", "山"]])
    plans = [["明月", "秋风", "落叶", "故乡"], ["明月", "山", "秋风", "故乡"]]
    vocab = SPECIALS + sorted(scores)
    planner = Planner.from_plans(KeywordIndex(scores), vocab, plans)
    kws = planner.extract("明月照故乡")
    assert kws[0] == "明月" and "故乡" in kws and len(kws) <= 4
    plan = planner.plan("明月")
    assert plan[0] == "明月" and len(plan) == 4 and len(set(plan)) == 4
    assert plan[1] == "秋风"  # co-occurs most with 明月 in the plans, highest TextRank among ties
    assert planner.extract("") == [] and len(planner.plan("")) == 4


def test_rhyme_groups_and_tones():
    assert rhymes("山", "间") and rhymes("江", "阳") and rhymes("东", "风") and not rhymes("山", "风")
    assert rhyme_and_tone("天")[1] and not rhyme_and_tone("月")[1]
    itos = SPECIALS + list("山间风月天年花")
    cons = QuatrainConstraints(itos)
    m = cons.masks(5, 3, ["一二三四五", "上下左右山"], rhyme=True, tone=True)
    allowed = [itos[i] for i in torch.nonzero(m[-1]).ravel()]
    assert allowed == ["间", "天", "年"]  # rhymes with 山 (yanqian), level tone, not 山 itself
    assert not m[0][: len(SPECIALS)].any() and m[0][len(SPECIALS):].all()
    assert [itos[i] for i in torch.nonzero(cons.masks(5, 1, ["一二三四五"])[-1]).ravel()] == ["山", "间", "风", "天", "年", "花"]


def test_fixed_length_beam_finds_the_exhaustive_optimum():
    torch.manual_seed(0)
    V, L = 7, 3
    table = torch.log_softmax(torch.randn(V, V) * 2, -1)  # a bigram model: p(next | prev)

    def step(y, state):
        return table[y], state

    masks = [torch.tensor([False, True, True, True, True, True, False])] * L
    tokens, score = beam_search(step, (torch.zeros(1, 1),), 0, 6, beam=V * V, allowed=masks)
    best = max(itertools.product(range(1, 6), repeat=L),
               key=lambda s: sum(table[a, b] for a, b in zip((0,) + s, s + (6,))))
    assert tuple(tokens) == best
    assert score == pytest.approx(float(sum(table[a, b] for a, b in zip((0,) + best, best + (6,)))), abs=1e-5)


def test_corpus_split_and_errors(tmp_path):
    poems = load_quatrains()
    assert len(poems) == 13978 and {p.n_chars for p in poems} == {5, 7}
    assert len(load_quatrains(chars=5)) == 3716
    a, b = split_poems(poems[:100], seed=1), split_poems(poems[:100], seed=1)
    assert [p.id for p in a[2]] == [p.id for p in b[2]] and [len(x) for x in a] == [80, 10, 10]
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(gzip.compress("x\ta\tt\t一二三四五|一二三四五|一二三四五|一二三四五\ny\ta\tt\t一二三四五|一二三|一二三四五|一二三四五\n".encode()))
    with pytest.raises(MalformedPoemError, match=r"bad.tsv.gz:2: not a quatrain"):
        load_quatrains(bad)
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        load_quatrains(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="task must be"):
        PoetryDataModule(task="verse", max_poems=30)


def test_data_module_tasks():
    dm = PoetryDataModule(task="lines", max_poems=60, batch_size=8)
    p = dm.train_poems[0]
    ex = dm.examples(p)
    assert len(ex) == 4 and ex[0]["context"] == [BOS] and ex[2]["context"].count(SEP) == 2
    for line, kw, e in zip(p.lines, dm.plans[p.id], ex):
        assert kw in line and dm.vocab.decode(e["keyword"]) == kw and dm.vocab.decode(e["target"]) == line
        assert e["target"][0] == BOS and e["target"][-1] == EOS
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"keyword", "context", "target"} and batch["target"].shape[0] == 8
    lm = PoetryDataModule(task="poems", max_poems=60)
    toks = lm.examples(p)[0]["tokens"]
    assert toks[0] == BOS and toks[-1] == EOS and toks.count(SEP) == 3 and len(toks) == 4 * (p.n_chars + 1) + 1
    nokw = PoetryDataModule(task="lines", max_poems=60, use_keywords=False)
    assert all(e["keyword"] == [SPECIALS.index("<nokw>")] for e in nokw.examples(p))


def test_toy_generator_overfits_a_few_poems():
    """Trained on 6 poems, the generator reproduces them from their own plans under the
    constraints (rhyme off: the originals need not rhyme by our modern-Mandarin groups)."""
    torch.manual_seed(0)
    dm = PoetryDataModule(task="lines", max_poems=8, batch_size=64)
    poems = dm.train_poems[:6]
    batch = collate([e for p in poems for e in dm.examples(p)])
    gen = LineGenerator(vocab_size=dm.vocab_size, embedding_dim=48, hidden=96, dropout=0.0, lr=0.01)
    opt = gen.configure_optimizers()
    for _ in range(150):
        total, n = gen._loss(batch)
        opt.zero_grad()
        (total / n).backward()
        opt.step()
    assert float(total.detach() / n) < 0.05
    planner = Planner.from_plans(dm.keywords, dm.keyword_vocab, [dm.plans[p.id] for p in poems])
    poet = PlanningPoetGenerator(gen, dm.vocab, planner)
    right = total_chars = 0
    for p in poems:
        out = poet.write(dm.plans[p.id], chars=p.n_chars, rhyme=False, tone=False)
        assert [len(x) for x in out.lines] == [p.n_chars] * 4
        right += sum(a == b for x, y in zip(out.lines, p.lines) for a, b in zip(x, y))
        total_chars += 4 * p.n_chars
    assert right / total_chars > 0.9


def test_fit_and_poem_commands(tmp_path, capsys):
    recipe = next(r for r in POETRY if r.stem == "poetry_planned")
    tiny = ["--data.init_args.max_poems", "40", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]
    assert main(["fit", "--config", str(recipe), *tiny]) == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    kw_recipe = next(r for r in POETRY if r.stem == "poetry_keywords")
    kw_dir = tmp_path / "kw"
    assert main(["fit", "--config", str(kw_recipe), *tiny[:-1], str(kw_dir)]) == 0
    assert main(["poem", "秋夜思乡", "--generator", str(ckpt), "--keyword-lm", str(next(kw_dir.rglob("last.ckpt"))), "--chars", "5"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-5:]  # after the fits' model summaries
    assert out[0].startswith("plan: ") and len(out[0][6:].split(" / ")) == 4
    assert [len(x) for x in out[1:]] == [5, 5, 5, 5]
    assert main(["poem", "秋", "--generator", str(tmp_path / "none.ckpt")]) == 1
    assert "none.ckpt not found" in capsys.readouterr().err
    for r in POETRY:  # every shipped poetry recipe builds its model and data
        assert main(["fit", "--config", str(r), *tiny[:-1], str(tmp_path / r.stem), "--trainer.max_steps", "1",
                     "--trainer.limit_val_batches", "1"]) == 0


def test_repeat_limit_and_sampling_respect_the_masks():
    table = torch.full((5, 5), -5.0)
    table[:, 2] = -0.01  # token 2 is always by far the most likely

    def step(y, state):
        return table[y], state

    masks = [torch.tensor([False, True, True, True, False])] * 4
    free, _ = beam_search(step, (torch.zeros(1, 1),), 0, 4, beam=3, allowed=masks, max_repeat=None)
    capped, _ = beam_search(step, (torch.zeros(1, 1),), 0, 4, beam=3, allowed=masks, max_repeat=2)
    assert free == [2, 2, 2, 2] and capped.count(2) == 2 and set(capped) <= {1, 2, 3}
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, _ = beam_search(step, (torch.zeros(1, 1),), 0, 4, allowed=masks, sample_top_k=3, generator=g1, max_repeat=None)
    b, _ = beam_search(step, (torch.zeros(1, 1),), 0, 4, allowed=masks, sample_top_k=3, generator=g2, max_repeat=None)
    assert a == b and set(a) <= {1, 2, 3} and len(a) == 4
