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

from .bands import SIGMA_PROPOSALS, TILT_WEIGHTS
from .errors import TiwbenchError
from .streams import digest

RATIO_SOURCES = ("trained", "oracle")
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
    ratio: str = option("trained", "Density ratio for ratio-based methods: trained | oracle.",
                        check=one_of(*RATIO_SOURCES), dataset_default=False)
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
    ratio_steps: int = option(6000, "Discriminator training steps.", check=at_least(1), ratio_training=True)
    ratio_batch_size: int = option(512, "Discriminator batch size (half D_bias, half D_ref).", check=at_least(2),
                                   ratio_training=True)
    ratio_lr: float = option(1e-3, "Discriminator AdamW learning rate.", check=positive, ratio_training=True)
    ratio_weight_decay: float = option(1e-2, "Discriminator AdamW weight decay.", check=at_least(0),
                                       ratio_training=True, legacy=0.0)
    ratio_holdout: float = option(0.2, "Share of D_ref and D_bias held out to select the discriminator "
                                  "(0 = train all steps, keep the last).",
                                  check=lambda v: None if _finite(v) and 0 <= v <= 0.5 else "must be in [0, 0.5]",
                                  ratio_training=True, legacy=0.0)
    ratio_patience: int = option(1500, "Stop the discriminator after this many steps without a held-out "
                                 "improvement.", check=at_least(1), ratio_training=True)
    ratio_select: str = option("band", "Discriminator state kept: band (best held-out BCE per σ band) | "
                               "global (best mean) | last.", check=one_of("band", "global", "last"),
                               ratio_training=True)
    ratio_limit: bool = option(True, "Build the exact large-σ limit into the time-dependent discriminator "
                               "(a linear term from the two sets' means).", ratio_training=True, legacy=False)
    ratio_limit_var: str = option("delta", "Variance in the large-σ term's denominator: delta (the two sets' "
                                  "pooled variance along their mean difference) | sigma_data (σ_data², "
                                  "right for isotropic data only).", check=one_of("delta", "sigma_data"),
                                  ratio_training=True, legacy="sigma_data")
    ratio_limit_base: str = option("tilt", "What the discriminator's network adds to (with --ratio-limit): linear "
                                   "(the large-σ term alone) | tilt (the exact noised log-ratio of D_bias's "
                                   "training split tilted by that term's clean-data value: the same limit at "
                                   "large σ, the tilt's per-point weights at small σ).",
                                   check=one_of("linear", "tilt"), ratio_training=True, legacy="linear")
    ratio_tilt_weights: str = option("select", "The tilted base's clean weights w_0 (with --ratio-limit-base "
                                     "tilt): linear (the large-σ term's clean value) | classifier (the "
                                     "time-independent discriminator's ratio, iw_dsm's, trained on the same "
                                     "split) | select (of the two, the one with the lower clean BCE on the "
                                     "discriminator's held-out data).",
                                     check=one_of(*TILT_WEIGHTS), ratio_training=True,
                                     legacy="linear")
    ratio_refit: bool = option(False, "After held-out selection, retrain the discriminator on all of D_ref and "
                               "D_bias for the selected number of steps per σ band.", ratio_training=True)
    ratio_prior: bool = option(True, "Keep the untrained discriminator, its output layer at zero (the large-σ "
                               "term alone, or w = 1), as a selection candidate: a σ band keeps it where no "
                               "trained state beats it on held-out data.", ratio_training=True, legacy=False)
    ratio_backbone: str = option("scratch", "Discriminator backbone: scratch (the dataset's own network, trained "
                                 "from scratch) | score (a small trained head on the frozen encoder of a score "
                                 "network with dsm_obs's training options, trained once per data and seed on the "
                                 "discriminator's training split of D_bias only, and cached) | FILE (the same "
                                 "head on a frozen TorchScript encoder (x_in, c_noise) -> (B, F)).",
                                 check=backbone_error, ratio_training=True)
    ratio_sigma: str = option("log_uniform", "σ at which the time-dependent discriminator trains: log_uniform "
                              "(over [0.002, 80], every level the sampler visits) | edm (the score network's "
                              "log-normal, where TIW-DSM's loss weighs the correction's error) | mixed "
                              "(half each).",
                              check=one_of(*SIGMA_PROPOSALS), ratio_training=True, legacy="log_uniform")
    ratio_sigma_floor: float = option(0.0, "Below this σ (in units of σ_data) the discriminator's network sees "
                                      "this σ (0 = off).", check=at_least(0), ratio_training=True)
    sample_steps: int = option(18, "Heun sampler steps.", check=at_least(2))
    fid_ref: str = option("eval", "FID reference statistics: eval (the evaluation set) | train (the dataset's "
                          "balanced training set, the paper's protocol) [dataset default].",
                          check=one_of("eval", "train"))
    fid_samples: int = option(0, "Samples FID scores; 0 = --num-samples (the paper: 50,000) [dataset default].",
                              check=at_least(0))
    num_samples: int = option(10_000, "Samples generated for the metrics.", check=at_least(2))
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
        so that a field added later with a default keeps existing runs' names."""
        identity = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.default is MISSING or getattr(self, f.name) != neutral(f)}
        return f"{self.dataset}-{self.method}-ref{self.ref:g}-a{self.alpha:g}-s{self.seed}-{digest(identity)}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config of a record or config.json; TiwbenchError on unknown or mistyped fields.
        Fields missing from older records take their defaults."""
        if not isinstance(d, dict):
            raise TiwbenchError("config is not a JSON object")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TiwbenchError(f"unknown config fields {', '.join(sorted(unknown))} (a newer tiwbench?)")
        values = {**{f.name: f.metadata["legacy"] for f in fields(cls)
                     if f.metadata["legacy"] is not MISSING and f.name not in d}, **d}
        if "dataset_options" in values:
            try:
                values["dataset_options"] = tuple((str(k), str(v)) for k, v in values["dataset_options"])
            except (TypeError, ValueError):
                raise TiwbenchError("config field dataset_options is not a list of [key, value]") from None
        for f in fields(cls):
            if f.name in values and f.name != "dataset_options":
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

    def ratio_config(self):
        """The ratio-training fields, without their prefix, as the trainer's config."""
        from .ratio import RatioTrainConfig

        return RatioTrainConfig(**{name.removeprefix("ratio_"): getattr(self, name) for name in RATIO_FIELDS})


def ratio_cache_fields(cfg: RunConfig) -> dict:
    """The ratio-training options that key a cached ratio model: all but those at their legacy
    value, so that an option added later (with the behaviour before it as its legacy) keeps the
    caches made before it, as run ids do."""
    legacy = {name.removeprefix("ratio_"): FIELDS[name].metadata["legacy"] for name in RATIO_FIELDS}
    return {k: v for k, v in asdict(cfg.ratio_config()).items()
            if legacy.get(k, MISSING) is MISSING or v != legacy[k]}


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
            problem = f"must be a {kind.__name__}"
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
    import inspect

    params = inspect.signature(recipe_cls.__init__).parameters
    return tuple((k, v) for k, v in options
                 if not (k in params and params[k].default is not inspect.Parameter.empty
                         and canonical(params[k].default) == v))


def resolve_config(method: str, dataset: str, ref: float, **options) -> RunConfig:
    """Validate the user's choices (before any work starts) and fill unset options from the
    dataset's defaults, then the field defaults. Options a run does not use are reset to their
    neutral values, so that they do not split its identity."""
    from . import registry

    method_cls = registry.load("method", method)
    recipe_cls = registry.load("dataset", dataset)
    given = {k: v for k, v in options.items() if v is not None}
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
    ratio = values.get("ratio", "trained")
    if ratio == "oracle" and method_cls.ratio and not recipe_cls.has_exact_ratio:
        raise TiwbenchError(f"--ratio oracle needs an exact density ratio, which dataset "
                            f"{dataset!r} does not have")
    values["ratio"] = ratio
    cfg = for_method(RunConfig(method=method, dataset=dataset, **values), method, method_cls.ratio,
                     method_cls.train_on)
    if cfg.ratio_tilt_weights == "select" and cfg.ratio_holdout == 0:
        raise TiwbenchError("--ratio-tilt-weights select chooses on held-out data, which --ratio-holdout 0 "
                            "leaves none of; pass --ratio-tilt-weights linear or classifier")
    return cfg


def classifier_config(cfg: RunConfig) -> RunConfig:
    """The options of the time-independent discriminator that a tilted base with classifier
    weights stands on: `cfg` as iw_dsm's, so that both share one cached model."""
    return for_method(cfg, cfg.method, "time_independent", "obs")


def for_method(cfg: RunConfig, method: str, ratio_kind: str | None, train_on: str | None) -> RunConfig:
    """`cfg` as a run of `method` (of that ratio kind and training set): the options it does not
    use reset to their neutral values, so that they do not split its identity."""
    cfg = replace(cfg, method=method, ratio=cfg.ratio if ratio_kind else "none")
    return replace(cfg, **{name: neutral(FIELDS[name]) for name in unused_fields(cfg, ratio_kind, train_on)})


def unused_fields(cfg: RunConfig, ratio_kind: str | None, train_on: str | None) -> list[str]:
    """The fields a run of a method with this ratio kind and training set does not use:
    resolve_config resets them, tables do not set rows apart by them (results.run_setting).
    `train_on` None: a record from before it was recorded (ref_share then counts as used)."""
    unused = [] if ratio_kind else ["alpha"]
    if train_on not in (None, "obs"):
        unused.append("ref_share")
    if cfg.ratio != "trained":
        unused += RATIO_FIELDS
    else:
        if ratio_kind != "time_dependent":  # trained on clean data only
            unused.append("ratio_sigma")
        if ratio_kind != "time_dependent" or not cfg.ratio_limit:  # no large-σ term to scale
            unused += ["ratio_limit_var", "ratio_limit_base"]
        if "ratio_limit_base" in unused or cfg.ratio_limit_base != "tilt":  # no tilt to weigh
            unused.append("ratio_tilt_weights")
    return unused


def cli_flags(values: dict, defaults: dict) -> list[str]:
    """The command-line options that set `values` (a subset of CLI fields) where they differ
    from `defaults`, in declaration order: the inverse of the CLI's parsing."""
    out = []
    for f in CLI_FIELDS:
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
    if isinstance(value, (list, tuple)):  # dataset options: [[key, value], ...]
        return ",".join(f"{k}={v}" for k, v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
