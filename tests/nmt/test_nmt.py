"""KVMemAtt NMT: attention against dense formulas, the key memory really changes and carries
over, a toy model overfits 20 pairs, beam vs greedy, metrics by hand, corpus parsing, the CLI."""

import math

import pytest
import torch

from lightning_des.cli import main
from lightning_des.data.parallel import ding_pairs, html_paragraphs
from lightning_des.data.translation import BOS, EOS, PAD, BucketBatchSampler, TranslationDataModule, read_pairs
from lightning_des.models.nmt import BahdanauAttention, KVMemoryAttention, Seq2Seq, dropping_rate, repetition_rate

from tests.test_cli import NMT


def test_bahdanau_matches_the_formula():
    torch.manual_seed(0)
    att = BahdanauAttention(4, 6, 5)
    q, h = torch.randn(2, 4), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    c, a, _ = att(q, h, mask, att.init_state(h))
    W, U, v = att.w.weight, att.u.weight, att.v.weight[0]
    for b in range(2):
        n = int(mask[b].sum())
        e = torch.stack([v @ torch.tanh(W @ q[b] + att.w.bias + U @ h[b, j]) for j in range(n)])
        ref = torch.softmax(e, 0)
        assert torch.allclose(a[b, :n], ref, atol=1e-6) and float(a[b, n:].detach().sum()) == 0
        assert torch.allclose(c[b], (ref[:, None] * h[b, :n]).sum(0), atol=1e-6)


def test_kv_memory_update_matches_the_formula_and_carries_over():
    torch.manual_seed(0)
    att = KVMemoryAttention(4, 6, 5, rounds=1)
    q, h = torch.randn(1, 4), torch.randn(1, 3, 6)
    mask = torch.ones(1, 3, dtype=torch.bool)
    (k0,) = att.init_state(h)
    assert torch.equal(k0, h) and k0.data_ptr() != h.data_ptr()  # K starts as a copy of h
    c, a, (k1,) = att(q, h, mask, (k0,))
    e = att.v(torch.tanh(att.u(k0) + att.w(q)[:, None])).squeeze(-1)
    ref_a = torch.softmax(e, -1)
    f, add = torch.sigmoid(att.forget(q)), torch.tanh(att.add(q))
    ref_k = k0 * (1 - ref_a[..., None] * f[:, None]) + ref_a[..., None] * add[:, None]
    assert torch.allclose(a, ref_a, atol=1e-6) and torch.allclose(c, (ref_a[..., None] * h).sum(1), atol=1e-6)
    assert torch.allclose(k1, ref_k, atol=1e-6) and (k1 - h).abs().max() > 1e-3  # the key memory changed
    # the next step addresses with the updated keys: same query, different attention
    _, a2, _ = att(q, h, mask, (k1,))
    assert not torch.allclose(a2, a)
    # forget_bias sets the forget layer's starting bias (F = sigmoid(-3) ~ 0.05 with zero weights)
    att3 = KVMemoryAttention(4, 6, 5, forget_bias=-3.0)
    assert torch.equal(att3.forget.bias, torch.full((6,), -3.0))
    # refine="gru": the second round addresses with q' = GRUCell(c, q) (input c, state q)
    g = KVMemoryAttention(4, 6, 5, rounds=2, refine="gru")
    c1, a1, (k1,) = KVMemoryAttention.forward(g, q, h, mask, (h.clone(),))
    e1 = g.v(torch.tanh(g.u(h) + g.w(q)[:, None])).squeeze(-1)
    r1 = torch.softmax(e1, -1)
    f1, add1 = torch.sigmoid(g.forget(q)), torch.tanh(g.add(q))
    kr = h * (1 - r1[..., None] * f1[:, None]) + r1[..., None] * add1[:, None]
    x, hq = (r1[..., None] * h).sum(1), q
    rz = torch.sigmoid(x @ g.refine.weight_ih[:8].T + g.refine.bias_ih[:8] + hq @ g.refine.weight_hh[:8].T + g.refine.bias_hh[:8])
    r, z = rz[:, :4], rz[:, 4:]
    n = torch.tanh(x @ g.refine.weight_ih[8:].T + g.refine.bias_ih[8:] + r * (hq @ g.refine.weight_hh[8:].T + g.refine.bias_hh[8:]))
    q2 = (1 - z) * n + z * hq
    r2 = torch.softmax(g.v(torch.tanh(g.u(kr) + g.w(q2)[:, None])).squeeze(-1), -1)
    assert torch.allclose(a1, r2, atol=1e-6) and torch.allclose(c1, (r2[..., None] * h).sum(1), atol=1e-6)
    with pytest.raises(ValueError, match="refine must be"):
        KVMemoryAttention(4, 6, 5, refine="lstm")
    # in the decoder the memory carries across steps (two rounds by default)
    m = Seq2Seq(20, 20, attention="kvmem", embedding_dim=8, hidden=12)
    memory, mask, s, st = m.encode(torch.tensor([[5, 6, 7, EOS]]))
    _, s, _, st1 = m.step(torch.tensor([BOS]), s, memory, mask, st)
    assert not torch.allclose(st1[0], st[0])


def test_kv_memory_without_update_is_multi_round_additive_attention():
    """``update=False`` keeps K = h: one round is Bahdanau attention with the same weights (the
    plain reference), two rounds re-address with the refined query; the state never changes."""
    torch.manual_seed(0)
    q, h = torch.randn(2, 4), torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    base = BahdanauAttention(4, 6, 5)
    for rounds in (1, 2):
        kv = KVMemoryAttention(4, 6, 5, rounds=rounds, update=False)
        for name in ("w", "u", "v"):  # the addressing layers the two modules share
            getattr(kv, name).load_state_dict(getattr(base, name).state_dict())
        (k0,) = kv.init_state(h)
        c, a, (k1,) = kv(q, h, mask, (k0,))
        assert torch.equal(k1, h)  # the key memory is never rewritten
        q_last = q if rounds == 1 else torch.tanh(kv.refine(torch.cat([q, base(q, h, mask, base.init_state(h))[0]], -1)))
        c_ref, a_ref, _ = base(q_last, h, mask, base.init_state(h))
        assert torch.allclose(a, a_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)
    m = Seq2Seq(20, 20, attention="kvmem", embedding_dim=8, hidden=12, kv_update=False)
    assert m.att.update is False
    memory, mask1, s, st = m.encode(torch.tensor([[5, 6, 7, EOS]]))
    _, _, _, st1 = m.step(torch.tensor([BOS]), s, memory, mask1, st)
    assert torch.equal(st1[-1], st[-1])


@pytest.mark.parametrize("decoder", ["conditional", "input_feeding"])
@pytest.mark.parametrize("attention", ["bahdanau", "kvmem"])
def test_teacher_forced_logits_equal_step_by_step_decoding(attention, decoder):
    torch.manual_seed(2)
    m = Seq2Seq(20, 22, attention=attention, embedding_dim=8, hidden=12, decoder=decoder).eval()
    src, tgt = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]]), torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, EOS, PAD]])
    with torch.no_grad():
        logits, _ = m(src, tgt)
        memory, mask, s, st = m.encode(src)
        for t in range(tgt.shape[1] - 1):
            step_logits, s, st, _ = m._decode_step(tgt[:, t], s, memory, mask, st)
            keep = torch.ones(22, dtype=torch.bool)
            keep[[PAD, BOS]] = False  # masked to -inf when decoding
            assert torch.allclose(logits[:, t, keep], step_logits[:, keep], atol=1e-5)


def _toy_batches(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        L = int(torch.randint(3, 7, (1,), generator=g))
        x = torch.randint(4, 24, (L,), generator=g).tolist()
        src.append(x + [EOS])
        tgt.append([BOS] + [t + 10 for t in reversed(x)] + [EOS])  # reverse and shift: needs attention
    pad = lambda seqs: torch.tensor([s + [PAD] * (max(map(len, seqs)) - len(s)) for s in seqs])  # noqa: E731
    return {"src": pad(src), "tgt": pad(tgt)}, src, tgt


def test_toy_kvmem_model_overfits_20_pairs():
    torch.manual_seed(0)
    batch, src, tgt = _toy_batches()
    m = Seq2Seq(24, 34, attention="kvmem", embedding_dim=24, hidden=48, dropout=0.0, lr=0.01, eos_weight=0.5)
    opt = m.configure_optimizers()
    for _ in range(200):
        ce, n, eos = m.losses(batch)
        loss = (ce + 0.5 * eos) / n
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(ce / n) < 0.05
    greedy = m.translate(batch["src"], beam=1)
    beam = m.translate(batch["src"], beam=4)
    gold = [t[1:-1] for t in tgt]
    assert sum(g == y for g, y in zip(greedy, gold)) >= 19 and sum(g == y for g, y in zip(beam, gold)) >= 19


def test_beam_one_is_greedy_and_beam_scores_at_least_as_well():
    torch.manual_seed(1)
    m = Seq2Seq(24, 34, attention="kvmem", embedding_dim=16, hidden=24, dropout=0.0, length_penalty=0.0, max_len_ratio=1.0)
    batch, _, _ = _toy_batches(4, seed=3)

    def logp(src, out):
        y = torch.tensor([[BOS] + out + [EOS]])
        logits, _ = m(src, y)
        logits[..., PAD] = logits[..., BOS] = float("-inf")
        return float(torch.log_softmax(logits, -1)[0].gather(1, y[0, 1:, None]).sum())

    for i in range(4):
        src = batch["src"][i: i + 1, : int((batch["src"][i] != PAD).sum())]
        g = m.greedy(src)[0]
        b = m.beam_search(src, beam=6)
        if len(g) < int(1.0 * src.shape[1]) + 10:  # greedy finished: beam's best is at least as likely
            assert logp(src, b) >= logp(src, g) - 1e-4


def test_metrics_by_hand():
    assert repetition_rate(["the cat the cat the"], ["the cat sat"], 1) == pytest.approx(3 / 5)
    assert repetition_rate(["a b a b"], ["a b a b"], 2) == 0.0
    # content words of the reference (>= 4 letters): black, house, sleeps; two are missing
    assert dropping_rate(["the black cat"], ["the black house cat sleeps"]) == pytest.approx(2 / 3)
    from lightning_des.models.nmt import translation_metrics

    m = translation_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert m["bleu"] == pytest.approx(100.0) and m["chrf"] == pytest.approx(100.0) and m["dropping"] == 0.0
    assert m["length_ratio"] == 1.0
    short = translation_metrics(["the cat , the cat"], ["the cat sat on the mat"])
    assert short["length_ratio"] == pytest.approx(5 / 6) and short["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 5))  # 13a words
    assert m["brevity_penalty"] == 1.0


def test_corpus_parsing_and_data_module(tmp_path):
    lines = ["# header :: x\n", "Er kam sehr spät nach Hause. {adv} | Hallo :: He came home very late. | hello\n",
             "Das ist gut; sehr gut. :: That is good; very good.\n", "Kurz. :: Short.\n", "a | b :: c\n"]
    assert ding_pairs(lines) == [("Er kam sehr spät nach Hause.", "He came home very late.")]
    assert html_paragraphs('<p class="x">Use <code>apt</code> &amp;\n  more.</p><div>no</div><p>二</p>') == ["Use apt & more.", "二"]
    tsv = tmp_path / "toy.tsv"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    tsv.write_text("".join(f"{' '.join(words[i % 10:] + words[:i % 10])}\t{' '.join(reversed(words[i % 7:]))}\n" for i in range(60)))
    dm = TranslationDataModule(path=str(tsv), vocab_size=60, batch_size=8, seed=3)
    dm2 = TranslationDataModule(path=str(tsv), vocab_size=60, batch_size=8, seed=3)
    assert dm.test_pairs == dm2.test_pairs and len(dm.train_pairs) == 48 and dm.src_tok.proto == dm2.src_tok.proto
    b = next(iter(dm.train_dataloader()))
    assert (b["tgt"][:, 0] == BOS).all() and b["src"].shape[0] == 8
    assert dm.tgt_tok.decode(dm.tgt_tok.encode(dm.train_pairs[0][1])) == dm.train_pairs[0][1]
    bs = BucketBatchSampler([5, 1, 4, 2, 3, 6, 7], 2, shuffle=False)
    assert list(bs) == [[1, 3], [4, 2], [0, 5], [6]]
    bad = tmp_path / "bad.tsv"
    bad.write_text("ok\tfine\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        read_pairs(bad)
    with pytest.raises(FileNotFoundError, match="data prepare"):
        read_pairs(tmp_path / "none.tsv")
    with pytest.raises(ValueError, match="unknown language pair"):
        TranslationDataModule(pair="fr-en")


def test_nmt_cli_fit_test_predict(tmp_path, capsys):
    tsv = tmp_path / "toy.tsv"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    tsv.write_text("".join(f"{' '.join(words[i % 10:])}\t{' '.join(words[i % 10:]).upper()}\n" for i in range(50)))
    recipes = NMT
    assert len(recipes) == 4
    common = ["--data.init_args.path", str(tsv), "--data.init_args.vocab_size", "40", "--model.init_args.hidden", "16",
              "--model.init_args.embedding_dim", "8", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks.output_file", str(tmp_path / "pred.txt")]
    for r in recipes:
        assert main(["fit", "--config", str(r), *common, "--trainer.max_epochs", "1"]) == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    capsys.readouterr()
    assert main(["test", "--config", str(recipes[0]), *common, "--ckpt_path", str(ckpt), "--model.init_args.beam", "2"]) == 0
    out = capsys.readouterr()
    assert "test_bleu" in out.out
    # the checkpoint's hyperparameters (beam 5) win over the command line, as LightningCLI does;
    # each replaced setting is named, the linked vocabulary sizes are not
    assert "model.init_args.beam=5 replaces 2" in out.err and "vocab_size" not in out.err
    assert main(["predict", "--config", str(recipes[0]), *common, "--ckpt_path", str(ckpt)]) == 0
    assert len((tmp_path / "pred.txt").read_text().splitlines()) == 5  # the 10% test split, in input order


def test_xavier_init_follows_joeynmt_rules():
    """init='xavier': zero biases, N(0, 0.1) embeddings with a zero padding row, Xavier-uniform
    bounds (sqrt(6 / (fan_in + fan_out))) per GRU gate block; the default keeps PyTorch's init."""
    torch.manual_seed(0)
    m = Seq2Seq(300, 400, embedding_dim=64, hidden=96, init="xavier")
    assert all(float(p.abs().max()) == 0.0 for n, p in m.named_parameters() if p.dim() == 1)
    for emb in (m.src_emb, m.tgt_emb):
        assert float(emb.weight[PAD].abs().max()) == 0.0
        assert abs(float(emb.weight[1:].std()) - 0.1) < 0.005
    w = m.cell.weight_hh  # [3 * 96, 96]: each gate block's bound is sqrt(6 / (96 + 96))
    bound = math.sqrt(6 / (96 + 96))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    out_bound = math.sqrt(6 / (m.out.in_features + m.out.out_features))
    assert out_bound * 0.95 < float(m.out.weight.abs().max()) <= out_bound
    torch.manual_seed(0)
    d = Seq2Seq(300, 400, embedding_dim=64, hidden=96)
    assert abs(float(d.src_emb.weight[1:].std()) - 1.0) < 0.05  # PyTorch's N(0, 1)
    with pytest.raises(ValueError, match="init must be"):
        Seq2Seq(300, 400, init="he")
    kv = Seq2Seq(300, 400, embedding_dim=16, hidden=24, attention="kvmem", forget_bias=-3.0, init="xavier")
    assert float(kv.att.forget.bias.min()) == float(kv.att.forget.bias.max()) == -3.0  # kept, not zeroed with the other biases


def test_input_feeding_decoder_matches_joeynmt_equations():
    """decoder='input_feeding': s_t = GRU([e; o_{t-1}], s_{t-1}), attention queried with s_t,
    o_t = tanh(W_o [s_t; c_t]) fed to the next step (o_0 = 0), logits = W_p o_t."""
    torch.manual_seed(3)
    m = Seq2Seq(20, 22, embedding_dim=8, hidden=12, decoder="input_feeding").eval()
    assert not hasattr(m, "query")
    src = torch.tensor([[5, 6, 7, EOS]])
    with torch.no_grad():
        memory, mask, s, st = m.encode(src)
        o = torch.zeros(1, 12)
        keys = m.att.u(memory)
        for y in (BOS, 4, 9):
            s_ref = m.cell(torch.cat([m.tgt_emb(torch.tensor([y])), o], -1), s)
            a = torch.softmax(m.att.v(torch.tanh(keys + m.att.w(s_ref)[:, None])).squeeze(-1), -1)
            o_ref = torch.tanh(m.out(torch.cat([s_ref, (a[..., None] * memory).sum(1)], -1)))
            logits, s, st, a_got = m._decode_step(torch.tensor([y]), s, memory, mask, st)
            assert torch.allclose(s, s_ref, atol=1e-6) and torch.allclose(a_got, a, atol=1e-6)
            assert torch.allclose(st[0], o_ref, atol=1e-6)
            keep = torch.ones(22, dtype=torch.bool)
            keep[[PAD, BOS]] = False
            assert torch.allclose(logits[:, keep], m.proj(o_ref)[:, keep], atol=1e-5)
            o = o_ref
    with pytest.raises(ValueError, match="decoder must be"):
        Seq2Seq(20, 22, decoder="luong")
