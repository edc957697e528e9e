"""The ratio-estimator contract: declared options (one declaration: name, default, type, check,
help), the kinds of ratio it can estimate, and one `fit` that returns a `DensityRatio`.
Torch-free, so that configurations and tables can read declarations without loading torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import TiwbenchError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..config import RunConfig
    from ..datasets.base import BenchmarkData, DatasetRecipe
    from ..ratio import DensityRatio

DEFAULT_ESTIMATOR = "discriminator"
KINDS = ("time_dependent", "time_independent")
# RunConfig fields an estimator may share with every other (declared in `RatioEstimator.shared`)
SHARED_FIELDS = ("ratio_steps", "ratio_batch_size", "ratio_lr", "ratio_backbone")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
NO_LEGACY = "<no legacy>"  # RatioOption.legacy of an option that keeps its default's meaning


def a_kind(kind: type) -> str:
    """The type as an error message names it: "an int", "a float"."""
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def parse_text(kind: type, text: str) -> Any:
    """A command-line text as a bool (true/false, 1/0, yes/no, on/off), int or float; any other
    kind keeps the text. ValueError when it is not one."""
    if kind is bool:
        low = text.strip().lower()
        if low not in _TRUE + _FALSE:
            raise ValueError(text)
        return low in _TRUE
    if kind in (int, float):
        return kind(text)
    return text


@dataclass(frozen=True)
class RatioOption:
    """One option of an estimator. `check(value)` returns an error text or None. `legacy`: for an
    option added with a default that changes results, the behaviour before it (records and run
    ids without the option read as that; see config.option)."""

    name: str
    default: Any
    help: str
    check: Any = None
    legacy: Any = NO_LEGACY

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def neutral(self) -> Any:
        """The value that leaves the option out of a run id: its legacy value if it has one."""
        return self.default if self.legacy == NO_LEGACY else self.legacy

    def parse(self, text: str) -> Any:
        """A command-line value as this option's type, checked; TiwbenchError naming the option."""
        kind = self.type
        try:
            value = parse_text(kind, text)
        except ValueError:
            raise TiwbenchError(f"--ratio-option {self.name} must be {a_kind(kind)}, got {text!r}") from None
        return self.validate(value)

    def validate(self, value: Any) -> Any:
        """`value` coerced to the option's type (an int for a float option) and checked."""
        kind = self.type
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)) or (
                kind is float and not math.isfinite(value)):
            raise TiwbenchError(f"--ratio-option {self.name} must be {a_kind(kind)}, got {value!r}")
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise TiwbenchError(f"--ratio-option {self.name} {problem}, got {value!r}")
        return value


@dataclass
class RatioRequest:
    """What `fit` gets: the run's configuration, which ratio to estimate (`kind`), the data and the
    dataset recipe (its `ratio_net()`), the estimator's options with defaults filled in, where
    caches live, and the device."""

    cfg: RunConfig
    kind: str  # time_dependent | time_independent
    recipe: DatasetRecipe
    data: BenchmarkData
    options: dict
    results: Path
    device: torch.device

    @property
    def time_dependent(self) -> bool:
        return self.kind == "time_dependent"

    @property
    def cache_key(self) -> dict:
        """What identifies this fit: data, reference size, seed, kind, the estimator's options and
        the shared ratio options it declares. `streams.digest` of it names a cache file. Options at
        their `legacy` value leave it, as they leave run ids, so caches made before an option
        existed keep their names."""
        estimator = type_of(self.cfg.ratio)
        shared = {name: getattr(self.cfg, name) for name in estimator.shared}
        options = estimator.without_legacy(dict(sorted(self.options.items())))
        return {"estimator": self.cfg.ratio, "dataset": self.cfg.dataset,
                "dataset_options": self.cfg.dataset_options, "ref": self.cfg.ref, "seed": self.cfg.seed,
                "kind": self.kind, **shared, "options": options}

    @property
    def cache_dir(self) -> Path:
        return self.results / "_ratios"


class RatioEstimator:
    """Base class of a density-ratio estimator: w_σ(x) = p_data,σ(x) / p_bias,σ(x).

    Class attributes: `name`, `description`; `kinds`, the ratios it can estimate (time_dependent:
    of noised data at every σ, for TIW methods; time_independent: of clean data, for IW-DSM);
    `options`, its `RatioOption`s; `shared`, the RunConfig fields it uses of those every estimator
    may share (`--ratio-steps`, `--ratio-batch-size`, `--ratio-lr`, `--ratio-backbone`; the others
    do not enter its runs' ids); `bound`, a word that marks its rows as a bound rather than an
    estimate ("exact", "label-informed"); `needs_exact`, whether it needs the dataset's exact ratio.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = KINDS
    options: ClassVar[tuple[RatioOption, ...]] = ()
    shared: ClassVar[tuple[str, ...]] = ()
    bound: ClassVar[str | None] = None
    needs_exact: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        """Declarations are checked when the class is defined: a plugin with a bad one shows as
        broken in `tiwbench list` instead of failing a run later."""
        super().__init_subclass__(**kwargs)
        bad_kinds = set(cls.kinds) - set(KINDS)
        bad_shared = set(cls.shared) - set(SHARED_FIELDS)
        names = [o.name for o in cls.options]
        if bad_kinds or bad_shared or len(set(names)) != len(names) or not all(
                isinstance(o, RatioOption) for o in cls.options):
            raise TiwbenchError(f"{cls.__name__}: kinds must be among {KINDS}, shared among {SHARED_FIELDS}, "
                                "options distinct RatioOptions")
        for o in cls.options:
            o.validate(o.default)

    def unused_options(self, kind: str, values: dict) -> set[str]:
        """Options that do not affect a fit of `kind` with these values: they are reset to their
        neutral value, so that they do not split a run's identity."""
        return set()

    def check(self, values: dict) -> str | None:
        """An error text if these option values cannot go together (checked before any work, with
        the options a fit of the run's kind ignores at their neutral values)."""
        return None

    def fit(self, request: RatioRequest) -> DensityRatio | tuple[DensityRatio, dict]:
        """The fitted ratio model for `request.kind` (frozen, in eval mode), optionally with a
        JSON summary of the fit that the run's record keeps (`ratio_fit`)."""
        raise NotImplementedError

    # -- option handling, shared by the CLI, configurations and tables

    @classmethod
    def option(cls, name: str) -> RatioOption:
        for o in cls.options:
            if o.name == name:
                return o
        known = ", ".join(o.name for o in cls.options) or "none"
        raise TiwbenchError(f"ratio estimator {cls.name!r} has no option {name!r}; its options: {known}")

    @classmethod
    def values(cls, stored) -> dict:
        """Every option's value from a configuration's stored options, which hold exactly those
        that differ from their neutral value (`normalise`)."""
        stored = dict(stored)
        return {o.name: stored.get(o.name, o.neutral) for o in cls.options}

    @classmethod
    def without_legacy(cls, values: dict) -> dict:
        """`values` less the options at their `legacy` value: what keys a cached fit, so that one made
        before an option existed keeps its name (run ids follow the same rule)."""
        legacy = {o.name: o.legacy for o in cls.options if o.legacy != NO_LEGACY}
        return {k: v for k, v in values.items() if k not in legacy or v != legacy[k]}

    @classmethod
    def normalise(cls, kind: str | None, values: dict) -> tuple[tuple[str, Any], ...]:
        """What a configuration stores of these effective values: the options a fit of `kind`
        uses, where they differ from their neutral value, sorted by name."""
        unused = cls().unused_options(kind, values) if kind else {o.name for o in cls.options}
        return tuple(sorted((o.name, values[o.name]) for o in cls.options
                            if o.name not in unused and values[o.name] != o.neutral))


def type_of(name: str) -> type[RatioEstimator]:
    """The estimator class registered under `name` (a one-line TiwbenchError if unknown)."""
    from .. import registry

    return registry.load("ratio", name)
