"""Planning-based Chinese quatrain generation: TextRank planner with keyword expansion, an
attention GRU line generator, a character-LM baseline and constrained decoding."""

from lightning_des.models.poetry.generator import LineGenerator
from lightning_des.models.poetry.lm import GRULanguageModel
from lightning_des.models.poetry.poet import GeneratedPoem, Planner, PlanningPoetGenerator, lm_poem
from lightning_des.data.textrank import textrank

__all__ = ["GRULanguageModel", "GeneratedPoem", "LineGenerator", "Planner", "PlanningPoetGenerator", "lm_poem", "textrank"]
