"""Configuration files: experiment settings in TOML, read as ``--set`` items and written as templates.

A file holds one table per experiment, with the keys of ``memdyn config EXPERIMENT``::

    [gibbs]
    sigma = 3.2
    saddle = 0.15

    memorization.alpha = 0.93      # a dotted key is the same as a [memorization] table

A key at the top level (outside any table) applies to every selected experiment that has it, as
``--set KEY=VALUE`` does. Tables of experiments that are not selected are ignored, so one file can
serve a whole suite. ``--set`` given beside ``--config`` overrides the file.

``memdyn config EXPERIMENT --toml`` prints a complete template that ``--config`` accepts unchanged;
a run directory keeps the resolved configuration of its experiments as ``config.toml``, a file
that runs them again as they were (``memdyn run --config config.toml``).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path

from .experiments.base import ConfigError

__all__ = ["read_config", "template", "resolved_toml"]


def read_config(path: str | os.PathLike, names: list[str], quick: bool = False) -> list[str]:
    """The settings of the TOML file ``path`` for the experiments ``names`` (all selected; empty: the
    default suite) as ``EXPERIMENT.KEY=VALUE`` items for :func:`memdyn.runner.resolve_configs`.

    Every setting is validated here, against the form (``quick``) it will run in, so that an error
    names the file: :class:`~memdyn.experiments.base.ConfigError` with one line giving the file, the
    key, the value and what is allowed.
    """
    from .experiments import DEFAULT_SUITE, EXPERIMENTS
    from .runner import resolve_configs

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    selected = list(names) or list(DEFAULT_SUITE)
    items = []
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in EXPERIMENTS:
                raise ConfigError(f"{path}: unknown experiment table [{key}]; valid: {', '.join(EXPERIMENTS)}")
            if key not in selected:
                continue
            for sub, v in value.items():
                if isinstance(v, dict):
                    raise ConfigError(f"{path}: [{key}.{sub}] is a table; {key}'s keys take numbers, strings or "
                                      f"lists (see `memdyn config {key}`)")
                items.append(f"{key}.{sub}={_text(path, f'{key}.{sub}', v)}")
        else:
            if not any(key in EXPERIMENTS[n].keys() for n in selected):
                valid = sorted({k for n in selected for k in EXPERIMENTS[n].keys()})
                where = selected[0] if len(selected) == 1 else "the selected experiments"
                raise ConfigError(f"{path}: unknown key {key!r} for {where}; valid keys: {', '.join(valid)}")
            items.append(f"{key}={_text(path, key, value)}")
    try:
        resolve_configs(list(names), quick, items)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return items


def _text(path: Path, key: str, value) -> str:
    """A TOML value as the text of a ``--set`` value that parses back to it."""
    if hasattr(value, "isoformat"):
        raise ConfigError(f"{path}: invalid value for {key}={value}: a date or time; use numbers, strings, booleans "
                          "or lists of them")
    return json.dumps(value)


def _toml(value) -> str:
    """A number, boolean, string or list of them as a TOML value (on one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _line(key: str, value) -> str:
    return f"{key} = {_toml(value)}"


def _comment(text: str) -> list[str]:
    import textwrap

    return [f"# {line}" for line in textwrap.wrap(text, 96)]


def template(name: str, quick: bool = False) -> str:
    """A complete, commented TOML template of experiment ``name``'s keys, accepted by ``--config``
    unchanged.

    Every key is written with its default (with ``quick``, the quick form's value). A key whose value
    differs between the full and the quick form is left commented out unless ``quick`` is given, so
    that ``--quick`` on the command line keeps its effect; a key without a default value (None) is
    commented out too.
    """
    from .experiments import EXPERIMENTS

    exp = EXPERIMENTS[name]
    lines = _comment(f"memdyn configuration: {name}: {exp.summary}")
    lines += _comment(f"Run it with `memdyn run {name} --config FILE.toml`; a --set KEY=VALUE beside it overrides the "
                      "file. Keys left commented out keep their defaults." + (
                          " This is the quick form: every key is set." if quick else
                          " A key whose --quick value differs is commented out, so that `memdyn run --quick` still "
                          "makes the run small."))
    lines += ["", f"[{name}]"]
    for row in exp.describe():
        value = row["quick"] if quick else row["default"]
        lines.append("")
        lines += _comment(f"{row['meaning']} ({row['type']})")
        differs = row["quick"] != row["default"]
        if differs:
            lines.append(f"# full form: {json.dumps(row['default'])}; --quick: {json.dumps(row['quick'])}")
        if value is None:
            lines.append(f"# {row['key']} = (no value: the default is computed, see above)")
        elif differs and not quick:
            lines.append(f"# {_line(row['key'], value)}")
        else:
            lines.append(_line(row["key"], value))
    return "\n".join(lines) + "\n"


def resolved_toml(configs: dict[str, dict], seed: int) -> str:
    """The resolved configuration of a run's experiments (name -> config dict) as TOML that runs them
    again as they were: ``memdyn run NAMES --config config.toml --seed SEED``."""
    lines = [f"# memdyn: the resolved configuration of this run (seed {seed}).",
             f"# Run it again: memdyn run {' '.join(configs)} --config config.toml --seed {seed} --out OTHER_DIR"]
    for name, cfg in configs.items():
        lines += ["", f"[{name}]"]
        for key, value in cfg.items():
            lines.append(f"# {key}: no value (computed default)" if value is None else _line(key, value))
    return "\n".join(lines) + "\n"
