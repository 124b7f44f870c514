"""Run a selection of experiments into a run directory, resuming what an interruption left.

A run directory is complete when every selected experiment has its ``<name>/results.json``;
rerunning the same command finds those and computes only what is missing (finished experiments
are loaded, finished simulations inside an unfinished experiment are loaded from their cells).
Everything is seeded from the run seed, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .configfile import resolved_toml
from .dynamics import DivergenceError
from .experiments import DEFAULT_SUITE, EXPERIMENTS
from .experiments.base import ConfigError, Context, ExperimentError, parse_value, torch_threads
from .store import RunStore, TableError

__all__ = ["RunSummary", "run_suite", "resolve_configs", "versions"]


@dataclass
class RunSummary:
    out: Path
    claims: list[dict]
    errors: dict[str, str]

    @property
    def all_hold(self) -> bool:
        return not self.errors and all(c["holds"] for c in self.claims)

    @property
    def checks_hold(self) -> bool:
        """No error and every claim holds, except findings about a real model (see :mod:`memdyn.claims`)."""
        return not self.errors and all(c["holds"] or c.get("finding") for c in self.claims)


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("memdyn", "numpy", "scipy", "torch", "pandas", "pyarrow", "matplotlib", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def resolve_configs(names: list[str], quick: bool, sets: list[str]) -> dict:
    """Validate experiment names and ``KEY=VALUE`` / ``EXPERIMENT.KEY=VALUE`` overrides. Without names:
    the default suite, each experiment in its ``suite_form``."""
    suite = not names
    names = list(names) or list(DEFAULT_SUITE)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ConfigError(f"unknown experiment {unknown[0]!r}; valid: {', '.join(EXPERIMENTS)}")
    overrides: dict[str, dict] = {n: {} for n in names}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        value = parse_value(text.strip())
        if "." in key and key.split(".", 1)[0] in EXPERIMENTS:
            exp, sub = key.split(".", 1)
            if exp not in overrides:
                raise ConfigError(f"--set {key}: experiment {exp!r} is not selected")
            overrides[exp][sub] = value
            continue
        targets = [n for n in names if key in EXPERIMENTS[n].keys()]
        if not targets:
            valid = sorted({k for n in names for k in EXPERIMENTS[n].keys()})
            where = names[0] if len(names) == 1 else "the selected experiments"
            raise ConfigError(f"unknown key {key!r} for {where}; valid keys: {', '.join(valid)}")
        for n in targets:
            overrides[n][key] = value
    return {n: EXPERIMENTS[n].resolve(quick or (suite and EXPERIMENTS[n].suite_form == "quick"), overrides[n])
            for n in names}


def _default_out(runs_dir: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = runs_dir / stamp
    i = 1
    while out.exists():
        out = runs_dir / f"{stamp}-{i}"
        i += 1
    return out


def _link_latest(runs_dir: Path, out: Path) -> None:
    link = runs_dir / "latest"
    tmp = runs_dir / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(out.name)
    os.replace(tmp, link)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_suite(names: list[str], out: str | os.PathLike | None = None, *, quick: bool = False,
              sets: list[str] = (), seed: int = 0, runs_dir: str | os.PathLike = "runs",
              progress: bool | None = None, workers: int = 1) -> RunSummary:
    """Run experiments ``names`` (all when empty) into ``out`` (default ``runs/<timestamp>``).

    ``workers`` > 1 runs that many experiments at once, each in its own process (in the suite's
    order, as processes free up; without progress bars). The results do not depend on it: an
    experiment that computes with torch sets its own thread count (its config's ``threads``).
    """
    if seed < 0:
        raise ConfigError(f"invalid value for seed={seed}: must be >= 0")
    if workers < 1:
        raise ConfigError(f"invalid value for workers={workers}: must be >= 1")
    configs = resolve_configs(list(names), quick, list(sets))
    if out is None:
        out = _default_out(Path(runs_dir))
    store = RunStore(out)
    if Path(out).parent == Path(runs_dir) and Path(out).name != "latest":
        _link_latest(Path(runs_dir), Path(out))

    new = {n: c.model_dump() for n, c in configs.items()}
    old = store.read_json("config.json")
    if old is not None:
        if old.get("seed") != seed:
            raise ConfigError(f"{out} holds a run with seed {old.get('seed')}, not {seed}; use another --out")
        for n, c in new.items():
            if n in old["experiments"] and old["experiments"][n] != c:
                raise ConfigError(f"{out} holds a run of {n} with a different config; use another --out")
        merged = {**old["experiments"], **new}
    else:
        merged = new
    store.write_json("config.json", {"seed": seed, "quick": quick, "experiments": merged})
    store.write_text("config.toml", resolved_toml(merged, seed))

    todo = []
    for i, (name, cfg) in enumerate(configs.items(), 1):
        done = store.read_json(f"{name}/results.json")
        if done is not None and done.get("config") == new[name] and done.get("code") == EXPERIMENTS[name].code():
            _say(f"[{i}/{len(configs)}] {name}: finished earlier, reusing {out}/{name}")
        else:
            todo.append((f"[{i}/{len(configs)}]", name, cfg))
    errors: dict[str, str] = {}
    if workers == 1 or len(todo) < 2:
        for tag, name, cfg in todo:
            errors.update(run_experiment(store.root, tag, name, cfg, seed, progress))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)  # for the experiments that leave torch's threads alone
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = [pool.submit(run_experiment, store.root, tag, name, cfg, seed, False) for tag, name, cfg in todo]
            for fut in futures:
                errors.update(fut.result())
    return finalize(store, errors)


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_experiment(out: Path, tag: str, name: str, cfg, seed: int, progress: bool | None) -> dict[str, str]:
    """Run one experiment into the run directory ``out`` (its cells resume) and write its
    ``results.json``, or its ``error.json`` when it diverged or could not measure; returns
    {name: error message} for the latter, else {}. ``tag`` prefixes its progress lines."""
    store = RunStore(out)
    _say(f"{tag} {name}: {EXPERIMENTS[name].summary}")
    t0 = time.perf_counter()
    code = EXPERIMENTS[name].code()
    ctx = Context(store, name, seed, progress, code)
    try:
        with torch_threads(getattr(cfg, "threads", None)):
            outcome = EXPERIMENTS[name].run(cfg, ctx)
    except DivergenceError as e:
        error = f"{name} diverged: {e} (step size {getattr(cfg, 'step', '?')}; stable only if a*lambda < 2)"
        store.write_json(f"{name}/error.json", {"experiment": name, "error": error, "step": e.step, "chain": e.chain})
        _say(f"    stopped: {name} diverged at step {e.step}, chain {e.chain}")
        return {name: error}
    except ExperimentError as e:
        error = f"{name} could not measure: {e}"
        store.write_json(f"{name}/error.json", {"experiment": name, "error": error})
        _say(f"    stopped: {error}")
        return {name: error}
    seconds = time.perf_counter() - t0
    tables = []
    try:
        for tname, df in outcome.tables.items():
            store.write_table(f"{name}/tables/{tname}.parquet", df)
            tables.append(f"{name}/tables/{tname}.parquet")
    except TableError as e:
        error = f"{name} made a table that cannot be stored: {e} (a defect of the experiment: please report it)"
        store.write_json(f"{name}/error.json", {"experiment": name, "error": error})
        _say(f"    stopped: {error}")
        return {name: error}
    figures = []
    for f in outcome.figures:
        store.write_figure(f"{name}/figures/{f.name}.png", f.fig)
        figures.append({"file": f"{name}/figures/{f.name}.png", "caption": f.caption})
    claims = [c.to_dict() for c in outcome.claims]
    store.path(f"{name}/error.json").unlink(missing_ok=True)
    store.write_json(f"{name}/results.json", {
        "experiment": name, "config": cfg.model_dump(), "code": code, "claims": claims, "figures": figures,
        "tables": tables, "seconds": seconds, "summary": outcome.summary, "section": EXPERIMENTS[name].section,
        "prediction": EXPERIMENTS[name].prediction})
    _say(f"    {name} done in {seconds:.1f} s: {sum(c['holds'] for c in claims)}/{len(claims)} claims hold")
    return {}


def finalize(store: RunStore, errors: dict[str, str] | None = None) -> RunSummary:
    """Merge per-experiment results into ``results.json`` and write ``report.html``."""
    from .report import write_report

    cfg = store.read_json("config.json") or {"experiments": {}}
    errors = dict(errors or {})
    claims, timings, experiments = [], {}, {}
    for name in cfg["experiments"]:
        res = store.read_json(f"{name}/results.json")
        if res is None:
            err = store.read_json(f"{name}/error.json")
            if err is not None:
                errors.setdefault(name, err["error"])
            status = "missing" if name not in errors else "diverged" if (err or {}).get("step") is not None else "error"
            experiments[name] = {"status": status}
            continue
        for c in res["claims"]:
            claims.append({"experiment": name, **c})
        timings[name] = res["seconds"]
        experiments[name] = {"status": "ok", "claims": len(res["claims"]),
                             "hold": sum(c["holds"] for c in res["claims"])}
    store.write_json("results.json", {
        "memdyn": versions()["memdyn"], "seed": cfg.get("seed"), "quick": cfg.get("quick"),
        "all_hold": not errors and all(c["holds"] for c in claims),
        "checks_hold": not errors and all(c["holds"] or c.get("finding") for c in claims), "experiments": experiments,
        "errors": errors, "claims": claims, "timings": timings, "versions": versions()})
    write_report(store.root)
    return RunSummary(store.root, claims, errors)
