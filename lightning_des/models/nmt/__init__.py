"""Neural machine translation: attention GRU encoder-decoder with Bahdanau or KVMemAtt
(key-value memory-augmented) attention, greedy/beam decoding, BLEU/chrF/repetition/dropping."""

from lightning_des.models.nmt.attention import BahdanauAttention, KVMemoryAttention
from lightning_des.models.nmt.metrics import dropping_rate, repetition_rate, translation_metrics
from lightning_des.models.nmt.seq2seq import Seq2Seq
from lightning_des.models.nmt.writer import TranslationWriter

__all__ = ["BahdanauAttention", "KVMemoryAttention", "Seq2Seq", "TranslationWriter", "dropping_rate", "repetition_rate", "translation_metrics"]
