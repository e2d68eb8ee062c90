"""Command-line overrides checked before hydra runs: an unknown key, a value hydra cannot parse or one of the
wrong type is one line naming the key (exit status 2), not hydra's multi-line report (exit status 1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["known_keys", "override_error"]

_GROUPS = ("metric", "data", "runtime", "output")


def known_keys() -> dict[str, list[str]]:
    """``{group: [its keys]}`` of met3r-eval's schema (the ``metric`` keys come from Settings)."""
    from met3r_metrics.cli import config as mconf

    schemas = {"metric": mconf.MetricConfig, "data": mconf.DataConfig, "runtime": mconf.RuntimeConfig,
               "output": mconf.OutputConfig}
    return {g: [f.name for f in dataclasses.fields(schemas[g])] for g in _GROUPS}


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _full_key(err: BaseException) -> str | None:
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith("full_key:"):
            return line.split(":", 1)[1].strip() or None
    return None


def override_error(argv: Sequence[str], compose: Callable[[list[str]], Any], prog: str = "met3r-eval") -> str | None:
    """The one-line problem with the ``key=value`` arguments of ``argv``, or None.

    Flags (``--cfg job``, ``-m``, ...) are left to hydra; with none of them and no sweep, the overrides are also
    composed (``compose``) so that a value of the wrong type is caught here.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    keys = known_keys()
    flags = any(a.startswith("-") for a in argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    sweep = False
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except HydraException as err:
            key = text.split("=", 1)[0]
            return (f"{prog}: {key}: hydra cannot parse {text!r} ({_first_line(err)}); quote the value for hydra, e.g. "
                    f"\"{key}='...'\" (docs/cli.md, Paths with non-ASCII characters)")
        sweep = sweep or override.is_sweep_override()
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra"):
            continue  # hydra's own settings and explicit +/~ edits: hydra reports them
        group, _, name = key.partition(".")
        if group not in keys:
            return f"{prog}: {key}: unknown setting; expected a key of one of the groups {', '.join(_GROUPS)}"
        if name and name not in keys[group]:
            return f"{prog}: {key}: unknown setting; expected one of {', '.join(f'{group}.{k}' for k in keys[group])}"
        if not name and group != "metric":
            return f"{prog}: {key}: expected {group}.<key>=<value> (one of {', '.join(f'{group}.{k}' for k in keys[group])})"
    if flags or sweep:
        return None
    try:
        compose(overrides)
    except Exception as err:  # noqa: BLE001 - hydra/omegaconf raise several types; each becomes one line
        cause = err.__cause__ or err  # hydra wraps omegaconf's error, which holds the key and the reason
        key = getattr(cause, "full_key", None) or _full_key(cause) or _full_key(err) or "command line"
        return f"{prog}: {key}: {_first_line(cause)}"
    return None
