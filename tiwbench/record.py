"""Record: what a finished run wrote (metrics.json), typed. Results, plot and report read runs
only through it. Torch-free, so that tables are made without loading torch."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import LEGACY_RATIO_NAMES, RunConfig
from .console import warn
from .errors import TiwbenchError

SCHEMA_VERSION = 1  # records written before the field existed have this layout too
RECORD_NAME = "metrics.json"


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")  # run ids, method, dataset and metric names


def check_names(config: RunConfig, metrics: dict) -> None:
    """Names that become file names (run ids, `<metric>_vs_ref.png`) and table rows: a record
    whose method, dataset or a metric name could point outside its folder, or whose reference
    size no run could have, is refused (and so skipped with a warning by tables and reports)."""
    for what, name in [("method", config.method), ("dataset", config.dataset), *(("metric", m) for m in metrics)]:
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
            raise TiwbenchError(f"{what} name {name!r} is not a plain name")
    if not (isinstance(config.ref, float) and 0 < config.ref <= 1):
        raise TiwbenchError(f"config field ref must be in (0, 1], got {config.ref!r}")
    if not (isinstance(config.seed, int) and config.seed >= 0):
        raise TiwbenchError(f"config field seed must be an integer >= 0, got {config.seed!r}")


LARGEST = 1e300  # no metric a run writes comes near it; two such values would average to inf


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < LARGEST


def _shares(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_number(s) and 0 <= s <= 1 for s in v)


def _map(keys, values):
    return lambda v: isinstance(v, dict) and all(keys(k) and values(x) for k, x in v.items())


def _items(of):
    return lambda v: isinstance(v, list) and all(of(x) for x in v)


def _optional(check):
    return lambda v: v is None or check(v)


_str = lambda v: isinstance(v, str)  # noqa: E731
_dict = lambda v: isinstance(v, dict)  # noqa: E731
_count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
# What each field of a record must hold (config and metrics are checked on their own)
FIELD_CHECKS = {
    "shares": _shares, "target_shares": _shares, "fit_shares": _optional(_shares),
    "feature_space": _str, "ratio_source": _str, "ratio_kind": _optional(_str),
    "timing": _map(_str, _number), "versions": _map(_str, _str), "device": _str,
    "processes": lambda v: _count(v) and v >= 1, "ratio_error": _items(_dict),
    "fid_protocol": _optional(_dict), "score_curves": _items(_dict),
    "ratio_fit": _optional(_dict), "group_accuracy": _items(_number),
    "train_on": _optional(_str), "stratified_batches": _optional(lambda v: isinstance(v, bool)),
    "sizes": _map(_str, _count),
}


def check_fields(values: dict) -> None:
    """Each field of a record as written: a record edited or damaged by hand is refused naming the
    field, so that tables and reports skip it with a warning rather than fail on it later."""
    for name, check in FIELD_CHECKS.items():
        if name in values and not check(values[name]):
            raise TiwbenchError(f"field {name} holds {str(values[name])[:60]!r}, not what a run writes")
    if "fit_shares" in values and values["fit_shares"] is not None and \
            len(values["fit_shares"]) != len(values["shares"]):
        raise TiwbenchError("field fit_shares does not have one share per group")
    if len(values["shares"]) != len(values["target_shares"]):
        raise TiwbenchError("fields shares and target_shares differ in length")
    sizes = values.get("sizes") or {}
    if sizes and not (sizes.get("samples", 0) >= 1 and sizes.get("ref", 0) >= 1):
        raise TiwbenchError(f"field sizes {sizes} lacks the samples or reference-set size a run records")


@dataclass(frozen=True)
class Record:
    """One finished run: its configuration, metrics and the facts needed to read them."""

    config: RunConfig
    metrics: dict[str, float]
    shares: list[float]  # generated share of each attribute group
    target_shares: list[float]
    feature_space: str  # the Fréchet distance's space: "data", "<dataset>_clf", ...
    ratio_source: str  # the ratio estimator's name (discriminator, exact, paper, a plugin's) | none
    ratio_kind: str | None  # time_dependent | time_independent | None
    # seconds (ratio_s, train_s, sample_s, total_s); a resumed run adds resumed_at_step and the
    # earlier segments' earlier_train_s, counted in train_s and total_s (absent: not counted)
    timing: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "?"
    processes: int = 1
    ratio_error: list[dict[str, float]] = field(default_factory=list)  # per σ, where exact ratio known
    fid_protocol: dict | None = None  # reference (eval | train), its size, samples scored
    score_curves: list[dict] = field(default_factory=list)  # score loss per σ band over training
    ratio_fit: dict | None = None  # a trained ratio's held-out curves and chosen steps (RatioFit.summary)
    group_accuracy: list[float] = field(default_factory=list)  # the attribute classifier's, per group
    train_on: str | None = None  # the method's training set: bias | ref | obs (None: older records)
    stratified_batches: bool | None = None  # whether the method honours --ref-share (None: older records)
    sizes: dict[str, int] = field(default_factory=dict)  # |D_bias|, |D_ref|, |eval|, samples: for floors
    fit_shares: list[float] | None = None  # what a perfect fit of the method's objective generates (fit_gap)
    schema_version: int = SCHEMA_VERSION
    folder: Path | None = field(default=None, compare=False)  # where it was read from; not written

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("folder")
        d["config"] = self.config.to_dict()
        return d

    def to_json(self) -> str:
        """Sorted, indented JSON; non-finite metrics are refused (JSON has no NaN)."""
        bad = [k for k, v in self.metrics.items() if not math.isfinite(v)]
        if bad:
            raise TiwbenchError(f"run {self.run_id}: non-finite metrics {', '.join(bad)}")
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> Record:
        if not isinstance(d, dict):
            raise TiwbenchError("not a JSON object")
        version = d.get("schema_version", 1)
        if version != SCHEMA_VERSION:
            raise TiwbenchError(f"schema version {version!r}; this tiwbench reads version {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)} - {"folder"}
        missing = {"config", "metrics", "shares", "target_shares", "feature_space", "ratio_source"} - set(d)
        if missing:
            raise TiwbenchError(f"lacks {', '.join(sorted(missing))}")
        metrics = d["metrics"]
        if not isinstance(metrics, dict) or not metrics or not all(_number(v) for v in metrics.values()):
            raise TiwbenchError(f"metrics must be a non-empty object of finite numbers below {LARGEST:g}")
        values = {k: v for k, v in d.items() if k in known}
        check_fields(values)
        values["config"] = RunConfig.from_dict(d["config"])
        # records written before ratio estimators were plugins: `trained` and `oracle` are their names
        values["ratio_source"] = LEGACY_RATIO_NAMES.get(values["ratio_source"], values["ratio_source"])
        if "stratified_batches" not in values and values["config"].method == "dsm_obs":
            values["stratified_batches"] = False
        values["metrics"] = {k: float(v) for k, v in metrics.items()}
        check_names(values["config"], values["metrics"])
        return cls(**values, folder=folder)

    @classmethod
    def read(cls, path: Path) -> Record:
        """The record at `path`; one-line TiwbenchError naming the file if it cannot be used."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), Path(path).parent)
        except (OSError, ValueError, TiwbenchError) as e:  # JSONDecodeError is a ValueError
            raise TiwbenchError(f"cannot use the run record {path}: {e}") from None


def finished(path: Path) -> bool:
    """Whether `path` holds a usable record (a truncated or empty one does not count)."""
    try:
        Record.read(path)
        return True
    except TiwbenchError:
        return False


def load_records(results: Path) -> list[Record]:
    """Every finished run's record under `results`, one per run id. Records are written
    atomically; an unreadable one is skipped with a warning, and a copy of a run folder (the
    same run id twice) is counted once, with a note."""
    if not results.is_dir():
        what = "is a file, not a folder" if results.exists() else "does not exist"
        raise TiwbenchError(f"results folder {results} {what}")
    by_id: dict[str, Record] = {}
    for path in sorted(results.glob(f"*/{RECORD_NAME}")):
        try:
            record = Record.read(path)
        except TiwbenchError as e:
            warn(f"skipped: {e}")
            continue
        if record.run_id in by_id:
            first = by_id[record.run_id].folder
            warn(f"skipped {path}: a copy of run {record.run_id} (counted once, from {first})")
            continue
        by_id[record.run_id] = record
    return list(by_id.values())
