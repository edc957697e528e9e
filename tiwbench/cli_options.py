"""Typer options generated from RunConfig's declaration, so that `run` and `sweep` offer every
run option with one help text and one default, and a field added to RunConfig appears in both."""

from __future__ import annotations

import functools
import inspect

import typer

from .config import CLI_FIELDS, field_type, flag, format_value


def _param(f) -> inspect.Parameter:
    """The command parameter of one RunConfig field (None = the dataset's or the field's default)."""
    meta = f.metadata
    kind = field_type(f)
    if f.name in ("dataset_options", "ratio_options"):
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                 default=typer.Option(None, flag(f.name)[:-1], help=meta["help"]),
                                 annotation=list[str] | None)
    default = format_value(f.default) if kind is not bool else ("on" if f.default else "off")
    if f.name == "precision":
        default = "auto"
    elif f.default == "":
        default = None
    if meta["help"].rstrip(".").endswith("]") or default is None:
        text = meta["help"]
    elif meta["dataset_default"]:
        text = f"{meta['help']} [dataset default, else {default}]"
    else:
        text = f"{meta['help']} [{default}]"
    decls = [f"{flag(f.name)}/--no-{flag(f.name)[2:]}"] if kind is bool else [flag(f.name)]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, *decls, help=text),
                             annotation=kind | None)


def with_run_options(command):
    """Give `command` an option per CLI field of RunConfig; it receives them as `options`, a dict
    of field name to value (None where not given)."""
    sig = inspect.signature(command)
    own = [p for p in sig.parameters.values() if p.name != "options"]
    generated = [_param(f) for f in CLI_FIELDS]

    @functools.wraps(command)
    def wrapper(**kwargs):
        options = {f.name: kwargs.pop(f.name) for f in CLI_FIELDS}
        return command(**kwargs, options=options)

    wrapper.__signature__ = sig.replace(parameters=own + generated)
    wrapper.__annotations__ = {**{k: v for k, v in command.__annotations__.items() if k != "options"},
                               **{p.name: p.annotation for p in generated}}
    return wrapper
