"""What an experiment is: a validated config, a run that returns claims, tables and figures."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..claims import Claim
from ..store import RunStore, code_hash

__all__ = ["ConfigError", "ExperimentError", "ExperimentConfig", "TorchConfig", "torch_threads", "Experiment", "Outcome", "Figure", "Context", "parse_value"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what is allowed."""


class ExperimentError(RuntimeError):
    """An experiment could not measure what it claims about (reported, exit code 1)."""


class ExperimentConfig(BaseModel):
    """Base of experiment configs: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class TorchConfig(ExperimentConfig):
    """Base of the configs of experiments that compute with torch: the thread count is part of the
    config because the result depends on it (torch splits its sums by thread)."""

    threads: int = Field(1, ge=1, le=256, description=(
        "torch threads while it runs (its results depend on the count through the order of floating-point sums; "
        "1, the default, gives the same numbers on any machine and is the fastest for these small models)"))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with torch's intra-op threads set to ``n`` (restored after); nothing when ``n`` is None."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class Figure:
    name: str
    fig: Any
    caption: str


@dataclass
class Outcome:
    """What an experiment returns."""

    claims: list[Claim]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass
class Context:
    """Where an experiment runs: its store, its seed and its cached cells."""

    store: RunStore
    experiment: str
    seed: int
    progress: bool = False
    #: hash of the code that computes the experiment's cells (:meth:`Experiment.code`); None: the whole package's
    code: str | None = None

    def seed_for(self, *key) -> int:
        """A 63-bit seed derived from the run seed, the experiment and ``key`` (stable across
        Python versions and processes)."""
        text = json.dumps([self.seed, self.experiment, *key], sort_keys=True)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1

    def cell(self, key: str, compute) -> dict:
        """Cached intermediate result (see :meth:`memdyn.store.RunStore.cell`), keyed by ``key`` and
        the hash of the code that computes it (``code``, see :func:`memdyn.store.code_hash`)."""
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)
        rel = f"{self.experiment}/cells/{safe}.{self.code or code_hash()}.npz"
        path = self.store.path(rel)
        fresh = not path.exists()
        out = self.store.cell(rel, compute)
        if fresh:  # the same cell from other code is never read again: do not keep it
            stale = re.compile(re.escape(safe) + r"\.[0-9a-f]{12}\.npz")
            for old in path.parent.iterdir():
                if old.name != path.name and stale.fullmatch(old.name):
                    old.unlink(missing_ok=True)
        return out


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, lists, booleans), a comma list of numbers,
    else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(t.strip()) for t in text.split(",") if t.strip()]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


class Experiment:
    """Base class. Subclasses set ``name``, ``summary``, ``Config``, ``quick`` and ``sample_keys``
    and implement :meth:`run`.

    ``sample_keys`` are the config keys that set how many independent samples a statistical claim
    averages (chains, replicates, expected events): ``memdyn calibrate --scale 4`` multiplies them
    to show that no verdict changes when the sample grows."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: the part of the theory the experiment tests (report heading) and its prediction in one sentence
    section: ClassVar[str] = ""
    prediction: ClassVar[str] = ""
    Config: ClassVar[type[ExperimentConfig]]
    quick: ClassVar[dict] = {}
    #: run by `memdyn run` / `make run` without names (False: only when named, e.g. too long for the suite)
    in_default_suite: ClassVar[bool] = True
    #: the form the default suite runs: "full", or "quick" for an experiment whose full form is too long for it
    #: (naming the experiment runs the full form unless --quick)
    suite_form: ClassVar[str] = "full"
    sample_keys: ClassVar[tuple] = ()

    def code(self) -> str:
        """Hash of the code that computes this experiment's results: its module and the memdyn
        modules in its import closure (:func:`memdyn.store.code_hash`). Cells and finished results
        are reused only while it stays the same."""
        return code_hash(type(self).__module__)

    def keys(self) -> list[str]:
        return list(self.Config.model_fields)

    def resolve(self, quick: bool = False, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
        """Defaults, then the quick preset, then ``overrides``; validated."""
        values = dict(self.quick) if quick else {}
        overrides = overrides or {}
        unknown = sorted(set(overrides) - set(self.keys()))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} for {self.name}; valid keys: {', '.join(self.keys())}")
        values.update(overrides)
        try:
            cfg = self.Config(**values)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "config"
            top = str(err["loc"][0]) if err["loc"] else key
            given = overrides.get(top, values.get(top))
            raise ConfigError(f"invalid value for {self.name}.{key}={json.dumps(given)}: {err['msg']}") from None
        self.check(cfg)
        return cfg

    def scaled(self, cfg, factor: float) -> dict:
        """``sample_keys`` of ``cfg`` multiplied by ``factor`` (as overrides), within each key's
        allowed maximum."""
        out = {}
        for key in self.sample_keys:
            top = next((m.le for m in self.Config.model_fields[key].metadata if getattr(m, "le", None) is not None),
                       None)
            v = int(round(getattr(cfg, key) * factor))
            out[key] = min(v, int(top)) if top is not None else v
        return out

    def check(self, cfg) -> None:
        """Cross-field validation; raise :class:`ConfigError`."""

    def describe(self) -> list[dict]:
        """Every key with its type, default, quick default and meaning."""
        rows = []
        for key, f in self.Config.model_fields.items():
            ann = f.annotation
            generic = getattr(ann, "__args__", None)
            tname = str(ann).replace("typing.", "") if generic else getattr(ann, "__name__", str(ann))
            rows.append({"key": key, "type": tname, "default": f.default, "quick": self.quick.get(key, f.default),
                         "meaning": f.description or ""})
        return rows

    def run(self, cfg, ctx: Context) -> Outcome:
        raise NotImplementedError
