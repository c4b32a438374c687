"""The embedding-size search space: one candidate width per field, and its memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

DEFAULT_CANDIDATES = (0, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class SizeSpace:
    """Per-field candidate embedding widths. A *choice* is one candidate index per field.

    Args:
        fields: sparse field names.
        cardinalities: rows of each field's table.
        candidates: ascending candidate widths shared by all fields; 0 drops the field.

    Memory is counted in embedding-table parameters, ``sum_f rows_f * width_f``.
    """

    fields: tuple[str, ...]
    cardinalities: tuple[int, ...]
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "cardinalities", tuple(int(n) for n in self.cardinalities))
        object.__setattr__(self, "candidates", tuple(int(c) for c in self.candidates))
        if len(self.fields) != len(self.cardinalities) or not self.fields:
            raise ValueError(f"need one cardinality per field, got {len(self.fields)} fields and {len(self.cardinalities)} cardinalities")
        c = self.candidates
        if len(c) < 2 or list(c) != sorted(set(c)) or c[0] < 0:
            raise ValueError(f"candidates must be at least two distinct ascending widths >= 0, got {list(c)}")

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def widths(self, choice: Sequence[int]) -> list[int]:
        self._check(choice)
        return [self.candidates[int(i)] for i in choice]

    def sizes(self, choice: Sequence[int]) -> dict[str, int]:
        """``{field: width}`` for ``CTRModule(embedding_dims=...)``."""
        return dict(zip(self.fields, self.widths(choice)))

    def choice_of(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The candidate indices of ``{field: width}`` (every field, candidate widths only)."""
        missing = [f for f in self.fields if f not in sizes]
        if missing:
            raise ValueError(f"sizes lack fields {missing}")
        bad = {f: w for f, w in sizes.items() if w not in self.candidates}
        if bad:
            raise ValueError(f"widths {bad} are not candidates {list(self.candidates)}")
        return tuple(self.candidates.index(sizes[f]) for f in self.fields)

    def field_params(self, choice: Sequence[int]) -> list[int]:
        return [n * w for n, w in zip(self.cardinalities, self.widths(choice))]

    def params(self, choice: Sequence[int]) -> int:
        return sum(self.field_params(choice))

    def uniform_params(self, width: int) -> int:
        """Parameters of the model with every field at ``width`` (need not be a candidate)."""
        return sum(self.cardinalities) * width

    def smallest(self) -> tuple[int, ...]:
        """The cheapest choice that keeps at least one field: every field at the smallest
        candidate, or, when that is 0, the field with the fewest rows at the smallest width > 0."""
        if self.candidates[0] > 0:
            return (0,) * self.num_fields
        f = min(range(self.num_fields), key=lambda i: self.cardinalities[i])
        return tuple(1 if i == f else 0 for i in range(self.num_fields))

    def min_params(self) -> int:
        """Parameters of :meth:`smallest`: no budget below it can be met."""
        return self.params(self.smallest())

    def keeps_a_field(self, choice: Sequence[int]) -> bool:
        return any(w > 0 for w in self.widths(choice))

    def largest(self) -> tuple[int, ...]:
        return (self.num_candidates - 1,) * self.num_fields

    def _check(self, choice: Sequence[int]) -> None:
        if len(choice) != self.num_fields or not all(0 <= int(i) < self.num_candidates for i in choice):
            raise ValueError(f"a choice needs {self.num_fields} candidate indices in [0, {self.num_candidates}), got {list(choice)}")
