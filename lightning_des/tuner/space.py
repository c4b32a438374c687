"""Search spaces: float, int (both optionally log-scaled) and categorical parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

Config = dict[str, Any]


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"need low < high (and low > 0 when log), got low={self.low}, high={self.high}, log={self.log}")

    @property
    def width(self) -> int:
        return 1

    def _t(self, v: float) -> float:
        return math.log(v) if self.log else v

    def encode(self, v: Any) -> list[float]:
        lo, hi = self._t(self.low), self._t(self.high)
        return [(self._t(float(v)) - lo) / (hi - lo)]

    def decode(self, u: Sequence[float]) -> Any:
        lo, hi = self._t(self.low), self._t(self.high)
        x = lo + min(max(u[0], 0.0), 1.0) * (hi - lo)
        return float(min(max(math.exp(x) if self.log else x, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.decode([rng.random()])

    def contains(self, v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.low <= v <= self.high


@dataclass(frozen=True)
class Int(Float):
    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.low) != self.low or int(self.high) != self.high:
            raise ValueError(f"Int bounds must be integers, got {self.low}, {self.high}")

    def decode(self, u: Sequence[float]) -> Any:
        # widen by half a step so each integer gets an equal share of the unit interval
        lo, hi = self._t(self.low - 0.4999 if not self.log else self.low), self._t(self.high + 0.4999 if not self.log else self.high + 0.4999)
        x = lo + min(max(u[0], 0.0), 1.0) * (hi - lo)
        return int(min(max(round(math.exp(x) if self.log else x), self.low), self.high))

    def contains(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high


@dataclass(frozen=True)
class Categorical:
    choices: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2 or len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"Categorical needs at least two distinct choices, got {list(self.choices)}")

    @property
    def width(self) -> int:
        return len(self.choices)

    def encode(self, v: Any) -> list[float]:
        return [1.0 if v == c else 0.0 for c in self.choices]

    def decode(self, u: Sequence[float]) -> Any:
        return self.choices[int(np.argmax(u))]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, v: Any) -> bool:
        return v in self.choices


Param = Float | Int | Categorical


class SearchSpace:
    """Named parameters; configurations are plain dicts. ``encode`` maps a configuration to
    the unit cube (categoricals one-hot) for the surrogate.

    Build from YAML-like dicts with :meth:`from_dict`::

        lr: {type: float, low: 1e-4, high: 1e-1, log: true}
        layers: {type: int, low: 1, high: 4}
        act: {type: categorical, choices: [relu, tanh]}
    """

    def __init__(self, params: Mapping[str, Param]) -> None:
        if not params:
            raise ValueError("a search space needs at least one parameter")
        self.params = dict(params)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> "SearchSpace":
        kinds = {"float": Float, "int": Int, "categorical": Categorical}
        params: dict[str, Param] = {}
        for name, p in spec.items():
            p = dict(p)
            kind = p.pop("type", None)
            if kind not in kinds:
                raise ValueError(f"parameter {name!r}: type must be one of {sorted(kinds)}, got {kind!r}")
            allowed = {"choices"} if kind == "categorical" else {"low", "high", "log"}
            unknown = sorted(set(p) - allowed)
            if unknown:
                raise ValueError(f"parameter {name!r} ({kind}): unknown keys {unknown}; allowed {sorted(allowed)}")
            try:
                params[name] = kinds[kind](**p)
            except TypeError as err:
                raise ValueError(f"parameter {name!r} ({kind}): {err}") from None
            except ValueError as err:
                raise ValueError(f"parameter {name!r}: {err}") from None
        return cls(params)

    @property
    def dim(self) -> int:
        return sum(p.width for p in self.params.values())

    def sample(self, rng: np.random.Generator) -> Config:
        return {n: p.sample(rng) for n, p in self.params.items()}

    def encode(self, config: Config) -> np.ndarray:
        self.validate(config)
        return np.array([u for n, p in self.params.items() for u in p.encode(config[n])], dtype=float)

    def decode(self, u: np.ndarray) -> Config:
        out, i = {}, 0
        for n, p in self.params.items():
            out[n] = p.decode(list(u[i : i + p.width]))
            i += p.width
        return out

    def neighbour(self, config: Config, rng: np.random.Generator, scale: float = 0.1) -> Config:
        """A random neighbour: numeric parameters moved by N(0, scale) in the unit cube, each
        categorical resampled with probability ``scale``."""
        out = {}
        for n, p in self.params.items():
            if isinstance(p, Categorical):
                out[n] = p.sample(rng) if rng.random() < scale else config[n]
            else:
                out[n] = p.decode([p.encode(config[n])[0] + rng.normal(0.0, scale)])
        return out

    def validate(self, config: Config) -> None:
        missing = [n for n in self.params if n not in config]
        extra = [n for n in config if n not in self.params]
        bad = {n: config[n] for n, p in self.params.items() if n in config and not p.contains(config[n])}
        if missing or extra or bad:
            raise ValueError(f"configuration does not fit the space: missing {missing}, unknown {extra}, out of range {bad}")
