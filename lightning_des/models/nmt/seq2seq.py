"""Attention encoder-decoder for translation, with Bahdanau or KVMemAtt attention.

Encoder: bidirectional GRU over source subwords (the source ends with ``<eos>``). Decoder: at
step t the query ``q = tanh(W [s_{t-1}; e(y_{t-1})])`` reads a context ``c_t`` through the
attention module; ``s_t = GRU([e(y_{t-1}); c_t], s_{t-1})``; logits from
``tanh(W_o [s_t; c_t; e(y_{t-1})])``. Both models share everything but the attention module.
``decoder="input_feeding"`` is JoeyNMT's RNN decoder instead (Luong et al.'s input feeding):
``s_t = GRU([e(y_{t-1}); o_{t-1}], s_{t-1})``, the attention reads with ``q = s_t``, and the
attentional vector ``o_t = tanh(W_o [s_t; c_t])`` (``o_0 = 0``) is both the readout and the next
step's extra input.
The optional EOS term adds ``-eos_weight * log a_{t, src_eos}`` at the step whose target is
``<eos>`` (attend to the source end when ending the sentence), once per sentence, to the summed
token cross-entropy; the sum is divided by the number of target tokens (so at weight 1 the term
weighs like one target token: dividing it by the sentence count instead made it ~15x heavier
and cost both models BLEU on de->en, see README).

Training recipe switches (shared by both attentions): ``label_smoothing`` (training loss only;
``val_loss`` stays the plain cross-entropy), ``lr_schedule`` (``constant``; ``warmup_rsqrt``:
linear warm-up over ``warmup_steps`` then ``lr * sqrt(warmup / step)``; ``plateau``: halve when
the monitored validation metric stops improving), ``tie_embeddings`` (the output projection
shares the target embedding matrix; the readout is then ``embedding_dim`` wide),
``val_bleu`` (greedy-decode the validation set every epoch and log ``val_bleu`` against the raw
reference text, for checkpoint selection), and beam search's ``coverage_penalty`` (GNMT:
``beta * sum_j log(min(sum_t a_tj, 1))`` added to ``log p / length ** length_penalty``).
``init="xavier"`` initialises as JoeyNMT's RNN recipes do (Xavier-uniform weight matrices, per
gate block in the GRUs, zero biases, embeddings from N(0, 0.1) with a zero padding row) instead
of PyTorch's defaults (embeddings N(0, 1), GRU/Linear uniform in +-1/sqrt(fan_in)).
Test metrics use the raw reference sentences of the data module (not subword round trips) and
are also logged per source domain (``test_bleu/<domain>``, ``test_repetition/<domain>`` ...) when
the corpus has several.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_des.data.translation import BOS, EOS, PAD
from lightning_des.models.nmt.attention import BahdanauAttention, KVMemoryAttention
from lightning_des.models.rnn import BiGRUEncoder, beam_search


class Seq2Seq(pl.LightningModule):
    """Args:
        src_vocab_size, tgt_vocab_size: linked from the data module.
        attention: ``bahdanau`` (baseline) or ``kvmem`` (KVMemAtt, ``rounds`` rounds per step).
        eos_weight: weight of the EOS attention term (0 = off).
        forget_bias: initial bias of KVMemAtt's forget layer (see ``KVMemoryAttention``).
        kv_refine: KVMemAtt's query refinement between rounds, ``tanh`` layer or ``gru`` cell.
        kv_update: False never rewrites KVMemAtt's key memory (an ablation: multi-round
            attention without the memory).
        beam, length_penalty: test/predict decoding (beam 1 = greedy); hypotheses are ranked
            by log-prob / length ** length_penalty (+ the coverage penalty).
        length_norm: ``power`` (``length ** length_penalty``) or ``gnmt`` (GNMT's and JoeyNMT's
            ``((5 + length) / 6) ** length_penalty``).
        coverage_penalty: GNMT's coverage weight ``beta`` (0 = off).
        max_len_ratio: decode at most ``ratio * source length + 10`` tokens.
        label_smoothing, lr_schedule, warmup_steps, tie_embeddings, val_bleu: the training
            recipe (module docstring).
        init: parameter initialisation, ``torch`` (PyTorch's defaults) or ``xavier`` (module docstring).
        decoder: ``conditional`` (the query from the previous state, the default) or
            ``input_feeding`` (JoeyNMT's RNN decoder; module docstring).
        bridge: the decoder's initial state, ``tanh(W mean_j h_j)`` (``mean``) or JoeyNMT's
            ``tanh(W [final forward state; final backward state])`` (``final``).
    """

    def __init__(self, src_vocab_size: int = 0, tgt_vocab_size: int = 0, attention: Literal["bahdanau", "kvmem"] = "bahdanau",
                 embedding_dim: int = 256, hidden: int = 256, rounds: int = 2, eos_weight: float = 0.0, dropout: float = 0.2,
                 lr: float = 1e-3, beam: int = 5, length_penalty: float = 1.0, max_len_ratio: float = 2.0,
                 forget_bias: float = 0.0, label_smoothing: float = 0.0,
                 lr_schedule: Literal["constant", "warmup_rsqrt", "plateau"] = "constant", warmup_steps: int = 0,
                 tie_embeddings: bool = False, val_bleu: bool = False, coverage_penalty: float = 0.0,
                 kv_refine: Literal["tanh", "gru"] = "tanh", init: Literal["torch", "xavier"] = "torch",
                 decoder: Literal["conditional", "input_feeding"] = "conditional",
                 length_norm: Literal["power", "gnmt"] = "power", bridge: Literal["mean", "final"] = "mean",
                 kv_update: bool = True) -> None:
        super().__init__()
        if src_vocab_size <= 0 or tgt_vocab_size <= 0:
            raise ValueError("src_vocab_size and tgt_vocab_size must be positive (set by the data module)")
        if attention not in ("bahdanau", "kvmem"):
            raise ValueError(f"attention must be 'bahdanau' or 'kvmem', got {attention!r}")
        if lr_schedule not in ("constant", "warmup_rsqrt", "plateau"):
            raise ValueError(f"lr_schedule must be 'constant', 'warmup_rsqrt' or 'plateau', got {lr_schedule!r}")
        if lr_schedule == "warmup_rsqrt" and warmup_steps < 1:
            raise ValueError("lr_schedule 'warmup_rsqrt' needs warmup_steps >= 1")
        if decoder not in ("conditional", "input_feeding"):
            raise ValueError(f"decoder must be 'conditional' or 'input_feeding', got {decoder!r}")
        if length_norm not in ("power", "gnmt"):
            raise ValueError(f"length_norm must be 'power' or 'gnmt', got {length_norm!r}")
        if bridge not in ("mean", "final"):
            raise ValueError(f"bridge must be 'mean' or 'final', got {bridge!r}")
        if init not in ("torch", "xavier"):
            raise ValueError(f"init must be 'torch' or 'xavier', got {init!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.src_emb = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=PAD)
        self.encoder = BiGRUEncoder(embedding_dim, hidden)
        self.init = nn.Linear(hidden, hidden)
        self.feeding = decoder == "input_feeding"
        readout = embedding_dim if tie_embeddings else hidden
        if not self.feeding:
            self.query = nn.Linear(hidden + embedding_dim, hidden)
        if attention == "bahdanau":
            self.att = BahdanauAttention(hidden, hidden, hidden)
        else:
            self.att = KVMemoryAttention(hidden, hidden, hidden, rounds, forget_bias, kv_refine, kv_update)
        self.cell = nn.GRUCell(embedding_dim + (readout if self.feeding else hidden), hidden)
        self.out = nn.Linear(2 * hidden + (0 if self.feeding else embedding_dim), readout)
        self.proj = nn.Linear(readout, tgt_vocab_size)
        if tie_embeddings:
            self.proj.weight = self.tgt_emb.weight
        self.drop = nn.Dropout(dropout)
        if init == "xavier":
            self._xavier_init()

    def _xavier_init(self) -> None:
        embeddings = {id(self.src_emb.weight), id(self.tgt_emb.weight)}
        for name, p in self.named_parameters():
            if id(p) in embeddings:
                continue
            if p.dim() == 1:
                nn.init.zeros_(p)
            elif "weight_ih" in name or "weight_hh" in name:  # GRU: each of the 3 gate blocks on its own (as JoeyNMT)
                for block in p.data.chunk(3, 0):
                    nn.init.xavier_uniform_(block)
            else:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            for emb in (self.src_emb, self.tgt_emb):
                nn.init.normal_(emb.weight, 0.0, 0.1)
                emb.weight[PAD].zero_()
        if isinstance(self.att, KVMemoryAttention):  # an explicit setting, not a default bias
            nn.init.constant_(self.att.forget.bias, self.hparams.forget_bias)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the encoder became :class:`BiGRUEncoder` name its GRU
        ``encoder.*``; they are renamed to ``encoder.gru.*`` (same weights)."""
        sd = checkpoint.get("state_dict", {})
        for k in [k for k in sd if k.startswith("encoder.") and not k.startswith("encoder.gru.")]:
            sd["encoder.gru." + k[len("encoder."):]] = sd.pop(k)

    # -- model ---------------------------------------------------------------------------
    def encode(self, src: torch.Tensor):
        memory = self.encoder(self.drop(self.src_emb(src)), src)
        mask = src != PAD
        if self.hparams.bridge == "final":  # the GRU's last states: forward at the last token, backward at the first
            half, last = memory.shape[-1] // 2, mask.sum(1) - 1
            summary = torch.cat([memory[torch.arange(len(src)), last, :half], memory[:, 0, half:]], -1)
        else:
            summary = (memory * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        s = torch.tanh(self.init(summary))
        st = self.att.init_state(memory)
        if self.feeding:  # the previous attentional vector travels with the attention state
            st = (memory.new_zeros(memory.shape[0], self.out.out_features), *st)
        return memory, mask, s, st

    def step(self, y: torch.Tensor, s: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, att_state: tuple):
        """One decoder step: (readout before the vocabulary projection, new state, attention, attention state)."""
        if self.feeding:  # dropout as JoeyNMT: on the GRU's input and on [s; c], not before the projection
            prev, *inner = att_state
            s = self.cell(self.drop(torch.cat([self.tgt_emb(y), prev], -1)), s)
            c, a, inner = self.att(s, memory, mask, tuple(inner))
            o = torch.tanh(self.out(self.drop(torch.cat([s, c], -1))))
            return o, s, a, (o, *inner)
        e = self.drop(self.tgt_emb(y))
        q = torch.tanh(self.query(torch.cat([s, e], -1)))
        c, a, att_state = self.att(q, memory, mask, att_state)
        s = self.cell(torch.cat([e, c], -1), s)
        return torch.tanh(self.out(torch.cat([s, c, e], -1))), s, a, att_state

    def forward(self, src: torch.Tensor, tgt: torch.Tensor):
        """Teacher-forced logits [B, T-1, V] and attention weights [B, T-1, S]. The vocabulary
        projection runs once over all steps (the recurrence only needs the readouts)."""
        memory, mask, s, st = self.encode(src)
        readouts, atts = [], []
        for t in range(tgt.shape[1] - 1):
            o, s, a, st = self.step(tgt[:, t], s, memory, mask, st)
            readouts.append(o)
            atts.append(a)
        return self._project(torch.stack(readouts, 1)), torch.stack(atts, 1)

    def _project(self, readout: torch.Tensor) -> torch.Tensor:
        return self.proj(readout if self.feeding else self.drop(readout))

    def losses(self, batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed token cross-entropy, token count, summed EOS-attention term)."""
        src, tgt = batch["src"], batch["tgt"]
        logits, atts = self(src, tgt)
        gold = tgt[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=PAD, reduction="sum",
                             label_smoothing=label_smoothing)
        src_eos = (src != PAD).sum(1) - 1  # the source's <eos> position
        at_eos = atts[gold == EOS]  # [B, S]: attention at each sentence's <eos> step
        eos_term = -torch.log(at_eos.gather(1, src_eos[:, None]).clamp(min=1e-9)).sum()
        return ce, (gold != PAD).sum(), eos_term

    def training_step(self, batch, batch_idx):
        ce, n, eos = self.losses(batch, self.hparams.label_smoothing)
        loss = (ce + self.hparams.eos_weight * eos) / n  # the EOS term counts like eos_weight target tokens per sentence
        self.log("train_loss", ce / n, prog_bar=True, batch_size=int(n))
        # the epoch's token-weighted mean; beside val_loss it tells underfitting from overfitting
        self.log("train_loss_epoch", ce / n, on_step=False, on_epoch=True, batch_size=int(n))
        return loss

    def validation_step(self, batch, batch_idx):
        ce, n, _ = self.losses(batch)
        self.log("val_loss", ce / n, prog_bar=True, batch_size=int(n))
        self.log("val_ppl", torch.exp(ce / n), batch_size=int(n))
        if self.hparams.val_bleu:
            self._val_outputs.extend(zip(batch["idx"][:, 0].tolist(), self.greedy(batch["src"])))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if self.hparams.val_bleu and self._val_outputs and not self.trainer.sanity_checking:
            from lightning_des.models.nmt.metrics import translation_metrics

            dm = self.trainer.datamodule
            hyps = [dm.tgt_tok.decode(h) for _, h in self._val_outputs]
            refs = [dm.val_pairs[i][1] for i, _ in self._val_outputs]
            self.log("val_bleu", translation_metrics(hyps, refs)["bleu"], prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "warmup_rsqrt":
            w = self.hparams.warmup_steps
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min((step + 1) / w, math.sqrt(w / (step + 1))))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.hparams.lr_schedule == "plateau":
            mode, monitor = ("max", "val_bleu") if self.hparams.val_bleu else ("min", "val_loss")
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor, "interval": "epoch"}}
        return opt

    # -- decoding ------------------------------------------------------------------------
    def _decode_step(self, y, s, memory, mask, st):
        o, s, a, st = self.step(y, s, memory, mask, st)
        logits = self._project(o)
        logits[:, PAD] = logits[:, BOS] = float("-inf")  # never emitted
        return logits, s, st, a

    @torch.no_grad()
    def greedy(self, src: torch.Tensor) -> list[list[int]]:
        self.eval()
        memory, mask, s, st = self.encode(src)
        y = torch.full((src.shape[0],), BOS, dtype=torch.long)
        out, done = [[] for _ in range(src.shape[0])], torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(int(self.hparams.max_len_ratio * src.shape[1]) + 10):
            logits, s, st, _ = self._decode_step(y, s, memory, mask, st)
            y = logits.argmax(-1)
            for i in torch.nonzero(~done).ravel().tolist():
                if int(y[i]) == EOS:
                    done[i] = True
                else:
                    out[i].append(int(y[i]))
            if done.all():
                break
        return out

    @torch.no_grad()
    def beam_search(self, src: torch.Tensor, beam: int | None = None) -> list[int]:
        """One sentence (``src`` [1, S]); finished hypotheses ranked by :func:`hypothesis_score`
        (length and coverage penalties) in :func:`lightning_des.models.rnn.beam_search`."""
        self.eval()
        memory, mask, s, st = self.encode(src)

        def step(y, state):
            n = y.shape[0]
            logits, s, st, a = self._decode_step(y, state[0], memory.expand(n, -1, -1), mask.expand(n, -1), state[1:])
            return F.log_softmax(logits, -1), (s, *st), a

        max_len = int(self.hparams.max_len_ratio * int(mask.sum())) + 10
        tokens, _ = beam_search(step, (s, *st), BOS, EOS, beam or self.hparams.beam, max_len,
                                length_penalty=self.hparams.length_penalty, coverage_penalty=self.hparams.coverage_penalty,
                                length_norm=self.hparams.length_norm)
        return tokens

    def translate(self, src: torch.Tensor, beam: int | None = None) -> list[list[int]]:
        k = beam or self.hparams.beam
        if k == 1:
            return self.greedy(src)
        rows = []
        for i in range(src.shape[0]):
            n = int((src[i] != PAD).sum())
            rows.append(self.beam_search(src[i: i + 1, :n], k))
        return rows

    def test_step(self, batch, batch_idx):
        ce, n, _ = self.losses(batch)
        self.log("test_loss", ce / n, batch_size=int(n))
        self._outputs.extend(zip(batch["idx"][:, 0].tolist(), self.translate(batch["src"])))

    def on_test_epoch_start(self) -> None:
        self._outputs = []

    def on_test_epoch_end(self) -> None:
        """Metrics against the raw reference sentences, overall and per source domain."""
        from lightning_des.models.nmt.metrics import metrics_by_domain, translation_metrics

        dm = self.trainer.datamodule
        hyps = [dm.tgt_tok.decode(h) for _, h in self._outputs]
        refs = [dm.test_pairs[i][1] for i, _ in self._outputs]
        for k, v in translation_metrics(hyps, refs).items():
            self.log(f"test_{k}", v)
        domains = [dm.test_domains[i] for i, _ in self._outputs]
        if len(set(domains)) > 1:
            for d, m in metrics_by_domain(hyps, refs, domains).items():
                for k, v in m.items():
                    self.log(f"test_{k}/{d}", v)

    def predict_step(self, batch, batch_idx):
        dm = self.trainer.datamodule
        return [dm.tgt_tok.decode(h) for h in self.translate(batch["src"])]

