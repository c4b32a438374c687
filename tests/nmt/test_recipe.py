"""The NMT training recipe: label smoothing, learning-rate schedules, tied embeddings, batches
by token count, validation BLEU and test metrics against the raw references (per domain), and
beam search's coverage penalty, each against a plain reference."""

import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_des.data.translation import BOS, EOS, PAD, BucketBatchSampler, TranslationDataModule
from lightning_des.models.nmt import Seq2Seq
from lightning_des.models.rnn import hypothesis_score


def toy_batch():
    return {"src": torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]]), "tgt": torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, EOS, PAD]])}


def test_label_smoothing_is_the_textbook_mixture_and_validation_stays_plain():
    torch.manual_seed(0)
    m = Seq2Seq(20, 22, embedding_dim=8, hidden=12, dropout=0.0, label_smoothing=0.1)
    b = toy_batch()
    logits, _ = m(b["src"], b["tgt"])
    gold = b["tgt"][:, 1:]
    logp = torch.log_softmax(logits, -1)[gold != PAD]
    g = gold[gold != PAD]
    nll, uniform = -logp.gather(1, g[:, None]).squeeze(1), -logp.mean(1)
    want = (0.9 * nll + 0.1 * uniform).sum()
    ce, n, _ = m.losses(b, 0.1)
    assert ce.item() == pytest.approx(want.item(), rel=1e-5)
    assert m.losses(b)[0].item() == pytest.approx(nll.sum().item(), rel=1e-5)


def test_warmup_rsqrt_schedule_and_plateau_monitor():
    m = Seq2Seq(20, 22, embedding_dim=8, hidden=12, lr=1e-2, lr_schedule="warmup_rsqrt", warmup_steps=4)
    cfg = m.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [1e-2 * min((k + 1) / 4, math.sqrt(4 / (k + 1))) for k in range(10)]
    assert lrs == pytest.approx(want)
    cfg = Seq2Seq(20, 22, embedding_dim=8, hidden=12, lr_schedule="plateau", val_bleu=True).configure_optimizers()
    assert cfg["lr_scheduler"]["monitor"] == "val_bleu" and cfg["lr_scheduler"]["scheduler"].mode == "max"
    with pytest.raises(ValueError, match="needs warmup_steps"):
        Seq2Seq(20, 22, lr_schedule="warmup_rsqrt")
    with pytest.raises(ValueError, match="lr_schedule must be"):
        Seq2Seq(20, 22, lr_schedule="cosine")
    with pytest.raises(ValueError, match="label_smoothing"):
        Seq2Seq(20, 22, label_smoothing=1.0)


def test_tied_embeddings_share_one_matrix():
    torch.manual_seed(0)
    m = Seq2Seq(20, 22, embedding_dim=8, hidden=12, tie_embeddings=True)
    untied = Seq2Seq(20, 22, embedding_dim=8, hidden=12)
    assert m.proj.weight is m.tgt_emb.weight
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(untied) - n(m) == 22 * 12 + (2 * 12 + 8 + 1) * (12 - 8)  # no own projection matrix, narrower readout
    ce, tokens, _ = m.losses(toy_batch())
    (ce / tokens).backward()
    assert m.tgt_emb.weight.grad is not None and m.tgt_emb.weight.grad[4:].abs().sum() > 0


def test_token_batches_respect_the_budget_and_cover_every_example():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (500,), generator=g).tolist()
    s = BucketBatchSampler(lengths, batch_size=8, shuffle=True, seed=1, max_tokens=200)
    n = len(s)
    batches = list(s)
    assert len(batches) == n
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in batches)
    nxt = len(s)  # a later epoch: __len__ describes the next iteration (another shuffle)
    assert nxt == len(list(s))
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        BucketBatchSampler(lengths, 8, True, max_tokens=0)


class Oracle(Seq2Seq):
    """Decodes the gold target of each source (looked up by its token ids): metrics must then
    be perfect exactly when references are matched to the right sentences."""

    table: dict = {}

    def greedy(self, src):
        return [self.table[tuple(x for x in row.tolist() if x != PAD)] for row in src]

    def translate(self, src, beam=None):
        return self.greedy(src)


def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    for name, n, domains, base in (("train", 60, ("gcc",), 0), ("valid", 12, ("gcc",), 100), ("test", 12, ("gcc", "qt"), 200)):
        rows = []
        for i in range(n):
            w = words[i % 11:] + words[: i % 5]
            rows.append(f"{' '.join(w)} {base + i}\t{' '.join(reversed(w)).title()} {base + i}.\t{domains[i % len(domains)]}\tk{i}")
        (d / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return d


def test_val_bleu_and_test_metrics_use_the_raw_references_per_domain(tmp_path):
    dm = TranslationDataModule(path=str(corpus(tmp_path)), vocab_size=80, batch_size=5)
    Oracle.table = {}
    for pairs in (dm.val_pairs, dm.test_pairs):
        for s, t in pairs:
            Oracle.table[tuple(dm.src_tok.encode(s) + [EOS])] = dm.tgt_tok.encode(t)
    m = Oracle(dm.src_vocab_size, dm.tgt_vocab_size, embedding_dim=8, hidden=12, val_bleu=True)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=1)
    trainer.fit(m, dm)
    # SentencePiece round trips are lossless on this text, so a perfect system scores 100
    assert all(dm.tgt_tok.decode(dm.tgt_tok.encode(t)) == t for _, t in dm.val_pairs)
    assert trainer.callback_metrics["val_bleu"].item() == pytest.approx(100.0)
    res = trainer.test(m, dm, verbose=False)[0]
    assert res["test_bleu"] == pytest.approx(100.0) and res["test_bleu/gcc"] == pytest.approx(100.0)
    assert res["test_chrf/qt"] == pytest.approx(100.0)
    # the same outputs scored against references in another order are far from perfect
    keys = list(Oracle.table)
    Oracle.table = {k: Oracle.table[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}
    assert trainer.test(m, dm, verbose=False)[0]["test_bleu"] < 90


def test_coverage_penalty_follows_gnmt():
    cov = torch.tensor([0.5, 1.7, 0.25])
    assert hypothesis_score(-6.0, 3, cov, 1.0, 0.0) == pytest.approx(-2.0)
    assert hypothesis_score(-6.0, 4, cov, 0.5, 0.2) == pytest.approx(-3.0 + 0.2 * (math.log(0.5) + 0.0 + math.log(0.25)))
    torch.manual_seed(1)
    plain = Seq2Seq(24, 34, attention="kvmem", embedding_dim=16, hidden=24, dropout=0.0)
    covered = Seq2Seq(24, 34, attention="kvmem", embedding_dim=16, hidden=24, dropout=0.0, coverage_penalty=0.0)
    covered.load_state_dict(plain.state_dict())
    src = torch.tensor([[5, 9, 11, 7, EOS]])
    assert plain.beam_search(src, 4) == covered.beam_search(src, 4)
    covered.hparams.coverage_penalty = 5.0
    out = covered.beam_search(src, 4)
    assert all(isinstance(t, int) and t not in (PAD, BOS, EOS) for t in out)



def test_checkpoints_from_before_the_shared_encoder_and_attention_still_load():
    from lightning_des.models.poetry import LineGenerator

    torch.manual_seed(0)
    for model, renames in ((Seq2Seq(20, 22, embedding_dim=8, hidden=12), {"encoder.gru.": "encoder."}),
                           (LineGenerator(30, embedding_dim=8, hidden=12), {"att.u.": "att_mem.", "att.w.": "att_state.", "att.v.": "att_v."})):
        new = model.state_dict()
        old = {}
        for k, v in new.items():
            for a, b in renames.items():
                if k.startswith(a):
                    k = b + k[len(a):]
            old[k] = v.clone()
        assert set(old) != set(new)
        ckpt = {"state_dict": old}
        model.on_load_checkpoint(ckpt)
        fresh = type(model)(**model.hparams)
        fresh.load_state_dict(ckpt["state_dict"])  # strict: every name matches again
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in new.items())


def test_length_norm_gnmt_is_wu_et_al_and_changes_the_ranking():
    from lightning_des.models.rnn import beam_search, length_normaliser

    assert hypothesis_score(-6.0, 7, None, 1.0, 0.0, "gnmt") == pytest.approx(-6.0 / 2.0)  # (5 + 7) / 6 = 2
    assert hypothesis_score(-6.0, 4, None, 0.5, 0.0, "gnmt") == pytest.approx(-6.0 / 1.5 ** 0.5)
    assert length_normaliser(4, 0.5, "power") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="length_norm"):
        length_normaliser(3, 1.0, "average")
    # two hypotheses: "short" = [3] + end, log-prob -0.9 - 0.1 = -1.0 over 2 tokens; "long" = eight 4s
    # + end, -0.5 - 7 x 0.3 - 0.4 = -3.0 over 9. Power alpha 1: -0.5 vs -0.33 (long wins);
    # GNMT alpha 1: -1.0 / (7/6) = -0.86 vs -3.0 / (14/6) = -1.29 (short wins); alpha 0: short.
    V, end = 6, 5

    def step(prev, state):
        (t,) = state
        logp = torch.full((len(prev), V), -30.0)
        for i, (p, ti) in enumerate(zip(prev.tolist(), t.tolist())):
            if ti == 0:
                logp[i, 3], logp[i, 4] = -0.9, -0.5
            elif p == 3:
                logp[i, end] = -0.1
            elif ti < 8:
                logp[i, 4] = -0.3
            else:
                logp[i, end] = -0.4
        return logp, (t + 1,)

    def run(alpha, form):
        return beam_search(step, (torch.zeros(1, dtype=torch.long),), 0, end, beam=2, max_len=20, length_penalty=alpha, length_norm=form)

    assert run(1.0, "power")[0] == [4] * 8 and run(1.0, "power")[1] == pytest.approx(-3.0 / 9)
    assert run(1.0, "gnmt")[0] == [3] and run(1.0, "gnmt")[1] == pytest.approx(-1.0 / (7 / 6))
    assert run(0.0, "power")[0] == run(0.0, "gnmt")[0] == [3]
    with pytest.raises(ValueError, match="length_norm"):
        run(1.0, "average")


def test_final_state_bridge_is_the_grus_last_states():
    torch.manual_seed(0)
    m = Seq2Seq(20, 22, embedding_dim=8, hidden=12, dropout=0.0, bridge="final").eval()
    src = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    _, _, s, _ = m.encode(src)
    for b, n in enumerate([4, 3]):  # each sentence alone, unpadded: h_n of the plain GRU
        _, h_n = m.encoder.gru(m.src_emb(src[b: b + 1, :n]))
        assert torch.allclose(s[b], torch.tanh(m.init(torch.cat([h_n[0, 0], h_n[1, 0]]))), atol=1e-6)
    mean = Seq2Seq(20, 22, embedding_dim=8, hidden=12, dropout=0.0).eval()
    mean.load_state_dict(m.state_dict())
    assert not torch.allclose(mean.encode(src)[2], s)
    with pytest.raises(ValueError, match="bridge"):
        Seq2Seq(20, 22, bridge="last")
