"""RunConfig: the one declaration of every run option — its type, default, help, validation and
whether it names the run. The CLI options of `run` and `sweep`, the dry-run output, the run id
and the reproducing commands in reports are all generated from it (docs/design.md §1).

Torch-free: `tiwbench table` reads records through this module without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import TiwbenchError
from .estimators.base import DEFAULT_ESTIMATOR, a_kind, type_of
from .streams import digest

PRECISIONS = ("fp32", "tf32", "bf16")
MAX_SEED = 2**63 - 100  # torch seeds are 64-bit; named streams add small offsets


def option(default: Any, help: str, check=None, cli: bool = True, dataset_default: bool = True,
           ratio_training: bool = False, legacy: Any = MISSING) -> Any:
    """A RunConfig field. `check(value)` returns an error text or None; `cli` fields are options
    of `run` and `sweep`; `dataset_default` fields take the recipe's value when not given;
    `ratio_training` fields matter only where a ratio model is trained (and key its cache).
    `legacy`: for a field added with a default that changes what runs compute, the behaviour
    before it existed: records without the field read as that, and a run that differs from it
    gets a new id (so an old run is never taken for a new one)."""
    meta = {"help": help, "check": check, "cli": cli, "dataset_default": dataset_default,
            "ratio_training": ratio_training, "legacy": legacy}
    return field(default=default, metadata=meta) if default is not MISSING else field(metadata=meta)


def at_least(low: float):
    return lambda v: ("must be a finite number" if not _finite(v) else None if v >= low
                      else f"must be >= {low:g}")


def positive(v) -> str | None:
    return None if _finite(v) and v > 0 else "must be a finite number > 0"


def one_of(*choices: str):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


RATIO_BACKBONES = ("scratch", "score")


def backbone_error(value) -> str | None:
    if value in RATIO_BACKBONES or (isinstance(value, str) and Path(value).is_file()):
        return None
    return f"must be {' or '.join(RATIO_BACKBONES)}, or an existing TorchScript file"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result; its digest names the run folder."""

    method: str = option(MISSING, "Method name (see `tiwbench list`).", cli=False)
    dataset: str = option(MISSING, "Dataset name (see `tiwbench list`).", cli=False)
    ref: float = option(MISSING, "Reference-set size as a fraction of |D_bias|, in (0, 1].", cli=False,
                        check=lambda v: None if _finite(v) and 0 < v <= 1 else "must be in (0, 1]")
    seed: int = option(0, "Seed of data, initialisation, training and sampling.", cli=False,
                       check=lambda v: None if isinstance(v, int) and 0 <= v <= MAX_SEED
                       else f"must be an integer in [0, {MAX_SEED}]")
    alpha: float = option(1.0, "Weight/correction temperature α (1 = theory, 0 = DSM(obs)).", cli=False,
                          check=at_least(0))
    steps: int = option(4000, "Score-network training steps.", check=at_least(1))
    batch_size: int = option(512, "Training batch size.", check=at_least(1))
    lr: float = option(1e-3, "Adam learning rate.", check=positive)
    ref_share: float = option(0.5, "Share of every score batch drawn from D_ref for methods on D_obs "
                              "(stratified batches; π, the share the ratio refers to, is this); 0 = uniform "
                              "draws from D_obs.",
                              check=lambda v: None if _finite(v) and 0 <= v < 1 else "must be in [0, 1)",
                              legacy=0.0)
    ema_decay: float = option(0.999, "EMA decay of the score network's weights, in [0, 1).",
                              check=lambda v: None if _finite(v) and 0 <= v < 1 else "must be in [0, 1)")
    ratio_steps: int = option(6000, "Ratio-model training steps (estimators that train).", check=at_least(1),
                              ratio_training=True)
    ratio_batch_size: int = option(512, "Ratio-model batch size (half D_bias, half D_ref).", check=at_least(2),
                                   ratio_training=True)
    ratio_lr: float = option(1e-3, "Ratio-model learning rate.", check=positive, ratio_training=True)
    ratio_backbone: str = option("scratch", "Discriminator backbone: scratch (the dataset's own network, trained "
                                 "from scratch) | score (a small trained head on the frozen encoder of a score "
                                 "network with dsm_obs's training options, trained once per data and seed on the "
                                 "discriminator's training split of D_bias only, and cached) | FILE (the same "
                                 "head on a frozen TorchScript encoder (x_in, c_noise) -> (B, F)).",
                                 check=backbone_error, ratio_training=True)
    ratio: str = option(DEFAULT_ESTIMATOR, "Density-ratio estimator of ratio-based methods (see `tiwbench list`): "
                        "discriminator | exact (analytic datasets) | paper | a plugin's.", dataset_default=False)
    ratio_options: tuple[tuple[str, Any], ...] = option(
        (), "KEY=VALUE for the ratio estimator (its options: `tiwbench list`); repeatable.",
        dataset_default=False, ratio_training=True)
    sample_steps: int = option(18, "Heun sampler steps.", check=at_least(2))
    fid_ref: str = option("eval", "FID reference statistics: eval (the evaluation set) | train (the dataset's "
                          "balanced training set, the paper's protocol) [dataset default].",
                          check=one_of("eval", "train"))
    fid_samples: int = option(0, "Samples FID scores; 0 = --num-samples (the paper: 50,000) [dataset default].",
                              check=at_least(0))
    # more than prdc's k = 5 nearest neighbours (evaluate.PRDC_K), or the metrics fail after all the training
    num_samples: int = option(10_000, "Samples generated for the metrics.", check=at_least(6))
    net: str = option("", "Score-network preset (images: tiny, ddpmpp32, ddpmpp64) [dataset default].")
    accum: int = option(1, "Gradient-accumulation micro-batches per process.", check=at_least(1))
    warmup: int = option(0, "Linear learning-rate warm-up steps.", check=at_least(0))
    grad_clip: float = option(0.0, "Max gradient norm, 0 = off.", check=at_least(0))
    xflip: bool = option(False, "Augment: mirror training images at random.")
    precision: str = option("fp32", "fp32 | tf32 | bf16 | auto (bf16 on GPUs, fp32 on CPUs) [auto].",
                            check=one_of(*PRECISIONS), dataset_default=False)
    dataset_options: tuple[tuple[str, str], ...] = option(
        (), "KEY=VALUE for the dataset recipe (e.g. imbalance=50, majority=0.9); repeatable.",
        dataset_default=False)

    @property
    def run_id(self) -> str:
        """Digest of the fields that differ from their defaults (the first three always count),
        so that a field added later with a default keeps existing runs' names. The built-in
        estimators are named as before they were plugins: the discriminator's options as the
        run options `ratio_<name>` they were, the exact ratio as `oracle`."""
        identity = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.default is MISSING or getattr(self, f.name) != neutral(f)}
        identity.pop("ratio_options", None)
        if self.ratio in LEGACY_RATIO_NAMES.values():
            identity.update({f"ratio_{k}": v for k, v in self.ratio_options})
            if "ratio" in identity:
                identity["ratio"] = {v: k for k, v in LEGACY_RATIO_NAMES.items()}[self.ratio]
        elif self.ratio_options:
            identity["ratio_options"] = [list(kv) for kv in self.ratio_options]
        return f"{self.dataset}-{self.method}-ref{self.ref:g}-a{self.alpha:g}-s{self.seed}-{digest(identity)}"

    def __getattr__(self, name: str):
        """`cfg.ratio_holdout` and the like, from before the discriminator's options moved to
        `ratio_options`: deprecated aliases for one release."""
        key = name.removeprefix("ratio_")
        if name.startswith("ratio_") and key in discriminator_option_names():
            import warnings

            warnings.warn(f"RunConfig.{name} is deprecated; use cfg.ratio_values()[{key!r}]", DeprecationWarning,
                          stacklevel=2)
            return option_values(self.ratio, self.ratio_options).get(key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def ratio_values(self) -> dict:
        """Every option of this run's ratio estimator, its stored ones over their neutral values."""
        return type_of(self.ratio).values(self.ratio_options)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config of a record or config.json; TiwbenchError on unknown or mistyped fields.
        Fields missing from older records take their defaults."""
        if not isinstance(d, dict):
            raise TiwbenchError("config is not a JSON object")
        if "ratio_options" not in d:  # written before ratio estimators were plugins
            d = legacy_config(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TiwbenchError(f"unknown config fields {', '.join(sorted(unknown))} (a newer tiwbench?)")
        values = {**{f.name: f.metadata["legacy"] for f in fields(cls)
                     if f.metadata["legacy"] is not MISSING and f.name not in d}, **d}
        for name in ("dataset_options", "ratio_options"):
            if name in values:
                try:
                    values[name] = tuple((str(k), v if name == "ratio_options" else str(v))
                                         for k, v in values[name])
                except (TypeError, ValueError):
                    raise TiwbenchError(f"config field {name} is not a list of [key, value]") from None
        for f in fields(cls):
            if f.name in values and f.name not in ("dataset_options", "ratio_options"):
                values[f.name] = _coerce(f, values[f.name])
        try:
            return cls(**values)
        except TypeError as e:
            raise TiwbenchError(f"config: {e}") from None

    def train_config(self, strata: tuple = ()):
        from .train import TrainConfig

        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           ema_decay=self.ema_decay, accum=self.accum, warmup=self.warmup,
                           grad_clip=self.grad_clip, xflip=self.xflip, strata=strata)


# The built-in estimators' names before they were plugins (`--ratio trained|oracle`): old records
# read as the new names, and run ids keep the old ones (RunConfig.run_id).
LEGACY_RATIO_NAMES = {"trained": DEFAULT_ESTIMATOR, "oracle": "exact"}


def discriminator_option_names() -> tuple[str, ...]:
    """The discriminator's options, which were run options `ratio_<name>` before estimators were
    plugins (old records, run ids and scripts still name them so)."""
    return tuple(o.name for o in type_of(DEFAULT_ESTIMATOR).options)


def option_values(ratio: str, stored, kind: str | None = None) -> dict:
    """Estimator `ratio`'s option values from a configuration's stored options — with `kind`, only
    those a fit of that kind uses; for an estimator not installed here, what was stored; none for
    ratio-free runs."""
    if ratio == "none":
        return {}
    try:
        estimator = type_of(ratio)
    except TiwbenchError:
        return dict(stored)
    values = estimator.values(stored)
    unused = estimator().unused_options(kind, values) if kind else set()
    return {k: v for k, v in values.items() if k not in unused}


def option_defaults(ratio: str) -> dict:
    """Estimator `ratio`'s declared defaults ({} if it is not installed here)."""
    try:
        return {o.name: o.default for o in type_of(ratio).options}
    except TiwbenchError:
        return {}


def ratio_option_flags(ratio: str, values: dict) -> list[str]:
    """`--ratio-option KEY=VALUE` for each of `values` (an estimator's options by name) that differs
    from its declared default, in declaration order; every one for an estimator not installed."""
    declared = option_defaults(ratio)
    order = list(declared) + sorted(set(values) - set(declared))
    return [f"--ratio-option {k}={format_value(values[k])}" for k in order
            if k in values and (k not in declared or values[k] != declared[k])]


def legacy_config(d: dict) -> dict:
    """A configuration written before ratio estimators were plugins, in today's terms: `trained`
    is the discriminator (its `ratio_*` fields its options, absent ones at their values from
    before they existed), `oracle` the exact ratio; `dsm_obs` with stratified batches is what
    is now `dsm_mix` (dsm_obs draws uniformly from D_obs, as the paper's DSM(obs))."""
    d = dict(d)
    popped = {k: d.pop(f"ratio_{k}") for k in discriminator_option_names() if f"ratio_{k}" in d}
    d["ratio"] = LEGACY_RATIO_NAMES.get(d.get("ratio", "trained"), d.get("ratio", "trained"))
    # stored as today's: the options that differ from their neutral (then: absent) values
    d["ratio_options"] = [] if d["ratio"] != DEFAULT_ESTIMATOR else sorted(
        [k, v] for k, v in popped.items() if v != type_of(DEFAULT_ESTIMATOR).option(k).neutral)
    if d.get("method") == "dsm_obs" and d.get("ref_share", 0.0) != 0.0:
        d["method"] = "dsm_mix"
    return d


FIELDS = {f.name: f for f in fields(RunConfig)}
CLI_FIELDS = [f for f in fields(RunConfig) if f.metadata["cli"]]
RATIO_FIELDS = tuple(f.name for f in fields(RunConfig) if f.metadata["ratio_training"])


def neutral(f) -> Any:
    """The value that leaves a field out of the run id: its legacy value if it has one."""
    return f.default if f.metadata["legacy"] is MISSING else f.metadata["legacy"]


def field_type(f) -> type:
    """The Python type of a field (annotations are strings under `from __future__`)."""
    return {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, tuple)


def _coerce(f, value):
    kind = field_type(f)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not tuple and not (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        raise TiwbenchError(f"config field {f.name} should be {kind.__name__}, got {value!r}")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(values: dict) -> None:
    """Raise one TiwbenchError naming the option for the first value that fails its check."""
    for name, value in values.items():
        f, check = FIELDS[name], FIELDS[name].metadata["check"]
        kind = field_type(f)
        if check is not None:
            problem = check(value)
        elif kind is not tuple and not isinstance(value, kind):
            problem = f"must be {a_kind(kind)}"
        else:
            problem = None
        if problem:
            raise TiwbenchError(f"{flag(name)} {problem}, got {value!r}")


def check_defaults(owner: str, defaults: dict) -> None:
    """A dataset recipe's `defaults`: known run options with valid values."""
    unknown = set(defaults) - set(FIELDS)
    if unknown:
        raise TiwbenchError(f"{owner}.defaults names unknown run options: {', '.join(sorted(unknown))}")
    try:
        validate(dict(defaults))
    except TiwbenchError as e:
        raise TiwbenchError(f"{owner}.defaults: {e}") from None


def parse_dataset_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """['imbalance=50'] -> (('imbalance', '50'),), sorted so that order does not split a run;
    numbers are written canonically (100, 100.0 and 1e2 are one run)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TiwbenchError(f"--dataset-option takes KEY=VALUE, got {item!r}")
        if key.strip() in out:
            raise TiwbenchError(f"--dataset-option {key.strip()} is given twice")
        out[key.strip()] = canonical(value.strip())
    return tuple(sorted(out.items()))


def canonical(value) -> str:
    """A dataset option's value as text, numbers in one spelling."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number) or isinstance(value, bool):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def drop_default_options(recipe_cls: type, options: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The dataset options without those set to the recipe's own default (same computation)."""
    from .registry import dataset_option_defaults

    defaults = dataset_option_defaults(recipe_cls)
    return tuple((k, v) for k, v in options if not (k in defaults and canonical(defaults[k]) == v))


def resolve_config(method: str, dataset: str, ref: float, **options) -> RunConfig:
    """Validate the user's choices (before any work starts) and fill unset options from the
    dataset's defaults, then the field defaults. Options a run does not use are reset to their
    neutral values, so that they do not split its identity."""
    from . import registry

    method_cls = registry.load("method", method)
    recipe_cls = registry.load("dataset", dataset)
    given = _deprecated_ratio_options({k: v for k, v in options.items() if v is not None})
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise TiwbenchError(f"unknown run options: {', '.join(sorted(unknown))}")
    values = {**recipe_cls.defaults, **given, "ref": ref}
    validate(values)
    if values.get("dataset_options"):
        values["dataset_options"] = drop_default_options(recipe_cls, tuple(values["dataset_options"]))
    registry.get_dataset(dataset, **dict(values.get("dataset_options", ())))  # options valid?
    if values.get("net") and values["net"] not in recipe_cls.nets:
        raise TiwbenchError(f"--net {values['net']!r} does not suit dataset {dataset!r}; "
                            f"choose from {', '.join(recipe_cls.nets)}")
    if values.get("fid_ref") == "train" and not recipe_cls.has_fid_train:
        raise TiwbenchError(f"--fid-ref train needs a balanced training set, which dataset {dataset!r} "
                            "does not have; use --fid-ref eval")
    values["ratio"], values["ratio_options"] = _ratio_choice(method_cls, recipe_cls, values)
    cfg = for_method(RunConfig(method=method, dataset=dataset, **values), method, method_cls.ratio,
                     method_cls.train_on, method_cls.stratified_batches)
    return cfg


def _ratio_choice(method_cls, recipe_cls, values: dict) -> tuple[str, tuple]:
    """The estimator's name and its options as stored (typed, checked against its declaration,
    those that differ from their neutral values), before any work starts."""
    estimator = type_of(values.get("ratio", DEFAULT_ESTIMATOR))
    given: dict = {}
    for key, value in values.get("ratio_options", ()):
        if key in given:
            raise TiwbenchError(f"--ratio-option {key} is given twice")
        option = estimator.option(key)
        given[key] = option.parse(value) if isinstance(value, str) else option.validate(value)
    if method_cls.ratio and method_cls.ratio not in estimator.kinds:
        raise TiwbenchError(f"ratio estimator {estimator.name!r} does not estimate the {method_cls.ratio} "
                            f"ratio that method {method_cls.name!r} needs")
    if method_cls.ratio and estimator.needs_exact and not recipe_cls.has_exact_ratio:
        raise TiwbenchError(f"--ratio {estimator.name} needs an exact density ratio, which dataset "
                            f"{recipe_cls.name!r} does not have")
    stored = estimator.normalise(method_cls.ratio, {**{o.name: o.default for o in estimator.options}, **given})
    # options the method's kind of fit ignores are at their neutral values when checked together
    problem = estimator().check(estimator.values(stored)) if method_cls.ratio else None
    if problem:
        raise TiwbenchError(f"--ratio {estimator.name}: {problem}")
    return estimator.name, stored


def _deprecated_ratio_options(given: dict) -> dict:
    """Scripts written before ratio estimators were plugins pass `ratio_holdout=0.1` or
    `ratio="oracle"`: still accepted for one release, with a DeprecationWarning."""
    import warnings

    legacy = {k: given.pop(f"ratio_{k}") for k in discriminator_option_names() if f"ratio_{k}" in given}
    if legacy:
        warnings.warn(f"resolve_config(ratio_<name>=...) is deprecated; pass ratio_options="
                      f"{tuple(legacy.items())!r}", DeprecationWarning, stacklevel=3)
        given["ratio_options"] = tuple(given.get("ratio_options", ())) + tuple(legacy.items())
    if given.get("ratio") in LEGACY_RATIO_NAMES:
        new = LEGACY_RATIO_NAMES[given["ratio"]]
        warnings.warn(f"ratio={given['ratio']!r} is deprecated; use ratio={new!r}", DeprecationWarning,
                      stacklevel=3)
        given["ratio"] = new
    return given


def parse_ratio_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    """['holdout=0.1'] -> (('holdout', '0.1'),): typed and checked by resolve_config against the
    estimator's declaration; a key given twice is refused there."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TiwbenchError(f"--ratio-option takes KEY=VALUE, got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def classifier_config(cfg: RunConfig) -> RunConfig:
    """The options of the time-independent model that a tilted base with classifier weights
    stands on: `cfg` as iw_dsm's, so that both share one cached model."""
    return for_method(cfg, cfg.method, "time_independent", "obs")


def for_method(cfg: RunConfig, method: str, ratio_kind: str | None, train_on: str | None,
               stratified: bool | None = True) -> RunConfig:
    """`cfg` as a run of `method` (of that ratio kind, training set and batch scheme): the
    options it does not use reset to their neutral values, so that they do not split its identity."""
    cfg = replace(cfg, method=method, ratio=cfg.ratio if ratio_kind else "none")
    cfg = replace(cfg, **{name: neutral(FIELDS[name])
                          for name in unused_fields(cfg, ratio_kind, train_on, stratified)})
    if ratio_kind:
        estimator = type_of(cfg.ratio)
        cfg = replace(cfg, ratio_options=estimator.normalise(ratio_kind, estimator.values(cfg.ratio_options)))
    return cfg


def unused_fields(cfg: RunConfig, ratio_kind: str | None, train_on: str | None,
                  stratified: bool | None = True) -> list[str]:
    """The fields a run of a method with this ratio kind, training set and batch scheme does not
    use: resolve_config resets them, tables do not set rows apart by them (results.run_setting).
    `train_on` None: a record from before it was recorded (ref_share then counts as used);
    `stratified` False: a method that ignores --ref-share (dsm_obs draws uniformly)."""
    unused = [] if ratio_kind else ["alpha"]
    if train_on not in (None, "obs") or stratified is False:
        unused.append("ref_share")
    if not ratio_kind or cfg.ratio == "none":
        return unused + list(RATIO_FIELDS)
    try:
        shared = type_of(cfg.ratio).shared
    except TiwbenchError:  # a record of an estimator not installed here: it counts as using them all
        return unused
    return unused + [name for name in RATIO_FIELDS if name != "ratio_options" and name not in shared]


def cli_flags(values: dict, defaults: dict) -> list[str]:
    """The command-line options that set `values` (a subset of CLI fields) where they differ
    from `defaults`, in declaration order: the inverse of the CLI's parsing."""
    out = []
    for f in CLI_FIELDS:
        if f.name == "ratio_options" and f.name in values:
            ratio = values.get("ratio", DEFAULT_ESTIMATOR)
            out += ratio_option_flags(ratio, option_values(ratio, values[f.name]))
            continue
        if f.name not in values or values[f.name] == defaults.get(f.name, f.default):
            continue
        value = values[f.name]
        if f.name == "dataset_options":
            out += [f"--dataset-option {k}={v}" for k, v in value]
        elif field_type(f) is bool:
            out.append(flag(f.name) if value else "--no-" + flag(f.name)[2:])
        else:
            out.append(f"{flag(f.name)} {format_value(value)}")
    return out


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):  # dataset options: [[key, value], ...]
        return ",".join(f"{k}={v}" for k, v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
