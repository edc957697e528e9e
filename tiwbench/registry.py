"""Methods, datasets and ratio estimators by name, discovered from entry points (ours are
declared like plugins).

Names are listed without importing plugins, so a broken plugin cannot break `tiwbench list`;
it fails with its name and import error when used. A name claimed twice is an error.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .errors import TiwbenchError

GROUPS = {"method": "tiwbench.methods", "dataset": "tiwbench.datasets", "ratio": "tiwbench.ratios"}
KIND_WORDS = {"method": "method", "dataset": "dataset", "ratio": "ratio estimator"}
_registered: dict[str, dict[str, type]] = {kind: {} for kind in GROUPS}


def register(kind: str, cls: type) -> type:
    """Register a class in-process (for notebooks and tests); usable as a decorator."""
    if cls.name in available(kind):
        raise TiwbenchError(f"{kind} name {cls.name!r} is already registered")
    check_attributes(kind, cls, cls.name)
    _registered[kind][cls.name] = cls
    return cls


# A method's class attributes the trainer and the tables branch on: their allowed values
METHOD_ATTRIBUTES = {"train_on": ("bias", "ref", "obs"), "ratio": (None, "time_dependent", "time_independent"),
                     "stratified_batches": (True, False), "fits": (None, "training", "target")}


def check_attributes(kind: str, cls: type, name: str) -> None:
    """A method plugin's class attributes, checked when it is registered or loaded: a misspelt
    `train_on` or `ratio` would otherwise run, write a record and mean nothing."""
    if kind != "method":
        return
    for attribute, allowed in METHOD_ATTRIBUTES.items():
        value = getattr(cls, attribute, None)
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise TiwbenchError(f"method {name!r}: {attribute} = {value!r}; it must be one of "
                                f"{', '.join(map(repr, allowed))}")


def unregister(kind: str, name: str) -> None:
    _registered[kind].pop(name, None)


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        if ep.name in found and found[ep.name].value != ep.value:
            a, b = found[ep.name], ep
            raise TiwbenchError(
                f"two plugins claim the {kind} name {ep.name!r}: {a.value} ({_dist(a)}) "
                f"and {b.value} ({_dist(b)})")
        found[ep.name] = ep
    return found


def _dist(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown distribution"


def available(kind: str) -> list[str]:
    """All names of `kind` ('method', 'dataset' or 'ratio'), sorted, without importing any plugin."""
    return sorted(set(_entry_points(kind)) | set(_registered[kind]))


def load(kind: str, name: str) -> type:
    """The class registered under `name`; unknown or broken names raise a one-line TiwbenchError."""
    if name in _registered[kind]:
        return _registered[kind][name]
    eps = _entry_points(kind)
    if name not in eps:
        raise TiwbenchError(f"unknown {KIND_WORDS[kind]} {name!r}; available: {', '.join(available(kind))}")
    try:
        cls = eps[name].load()
    except Exception as e:  # a plugin's import error, reported with its name
        raise TiwbenchError(f"{kind} {name!r} ({eps[name].value}) failed to load: "
                            f"{type(e).__name__}: {e}") from e
    base = _base(kind)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TiwbenchError(f"{kind} {name!r} ({eps[name].value}) is not a subclass of "
                            f"{base.__module__}.{base.__name__}")
    if getattr(cls, "name", None) != name:
        raise TiwbenchError(f"{kind} {name!r} ({eps[name].value}) declares name "
                            f"{getattr(cls, 'name', None)!r}; they must agree")
    check_attributes(kind, cls, name)
    return cls


def _base(kind: str) -> type:
    if kind == "method":
        from .methods.base import Method
        return Method
    if kind == "ratio":
        from .estimators.base import RatioEstimator
        return RatioEstimator
    from .datasets.base import DatasetRecipe
    return DatasetRecipe


def get_method(name: str):
    return load("method", name)()


def get_dataset(name: str, **options):
    """An instance of the dataset recipe; `options` (from --dataset-option) go to its constructor."""
    cls = load("dataset", name)
    options = _typed_options(name, cls, options)
    try:
        return cls(**options)
    except TypeError as e:
        raise TiwbenchError(f"dataset {name!r} does not take the options {sorted(options)}: {e}") from e
    except ValueError as e:
        raise TiwbenchError(f"dataset {name!r}: bad option value: {e}") from e


def dataset_option_defaults(cls: type) -> dict:
    """A recipe's --dataset-options (its constructor's keyword arguments) and their defaults."""
    import inspect

    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _typed_options(name: str, cls: type, options: dict) -> dict:
    """--dataset-option texts as the type of the constructor's default where that is a bool, int
    or float, so that a recipe receives `n_bias=5000` as 5000; other values pass as given."""
    from .estimators.base import a_kind, parse_text

    defaults = dataset_option_defaults(cls)
    typed = {}
    for key, value in options.items():
        kind = type(defaults[key]) if key in defaults else None
        if isinstance(value, str) and kind in (bool, int, float):
            try:
                value = parse_text(kind, value)
            except ValueError:
                raise TiwbenchError(f"dataset {name!r}: --dataset-option {key} must be {a_kind(kind)}, "
                                    f"got {value!r}") from None
        typed[key] = value
    return typed


def describe(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) for every name; a broken plugin shows its error instead."""
    rows = []
    for name in available(kind):
        try:
            rows.append((name, load(kind, name).description))
        except TiwbenchError as e:
            rows.append((name, f"[broken] {e}"))
    return rows
