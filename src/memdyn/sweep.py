"""Sweeps: one experiment over a grid of config values and seeds, one task per cell, on Dask.

A cell is a grid point (one value per swept key) and a seed. Each cell is an ordinary run
directory, ``<out>/cells/<key=value,...>/seed-<seed>``, written by :func:`memdyn.runner.run_suite`
on whichever worker runs it; the client merges every cell's claims into one table,
``<out>/sweep.parquet`` (the swept keys and the seed as columns, one row per claim), and writes
``<out>/report.html`` with every measured quantity against the swept keys.

Cells run on a Dask cluster: the one at ``scheduler`` (``tcp://HOST:PORT``), or a
:class:`distributed.LocalCluster` of worker processes listening on 127.0.0.1 only, closed when the
sweep ends. A task whose worker dies is given to another worker (Dask retries it up to
:data:`RETRIES` more times). Rerunning the same sweep skips the cells that finished (their
results are on disk), and an interrupted cell resumes from its own finished simulations.

The same executor runs :func:`memdyn.calibration.calibrate`'s seeds (:func:`execute`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .experiments.base import ConfigError, parse_value
from .store import RunStore

__all__ = ["SweepResult", "sweep", "parse_grid", "parse_seeds", "execute", "RETRIES"]

#: extra attempts of a cell whose task raised or whose worker died
RETRIES = 2


def parse_grid(items) -> dict[str, list]:
    """``["KEY=V1,V2,...", ...]`` -> {KEY: [V1, V2, ...]} (values parsed like ``--set``; a list value is
    written in brackets, ``steps=[0.1,0.2],[0.2,0.3]``)."""
    grid: dict[str, list] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        if not key or not text:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} given twice; put all its values in one --grid {key}=V1,V2,...")
        values = [parse_value(v.strip()) for v in _split_values(text)]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"--grid {key}: repeated value in {text!r}")
        grid[key] = values
    return grid


def _split_values(text: str) -> list[str]:
    """Split at commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    if any(not v.strip() for v in out):
        raise ConfigError(f"--grid: empty value in {text!r}")
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"3,5,8"``, ``"7"`` or a mix (``"0-3,10"``) -> sorted distinct seeds >= 0."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(f"invalid value for seeds={text!r}: use FIRST-LAST, a comma list or both (e.g. 0-19)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"invalid value for seeds={text!r}: range {lo}-{hi} is empty")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


# -- executor --------------------------------------------------------------------------------------


def execute(tasks: list[tuple[str, Callable, tuple]], *, scheduler: str | None = None, workers: int | None = None,
            progress: bool | None = None, desc: str = "cells", say=None) -> dict[str, object]:
    """Run ``(key, function, args)`` tasks; return {key: result, or the exception it ended with}.

    In this process one after another when ``workers == 1`` and no scheduler is given; otherwise
    one Dask task each, on the cluster at ``scheduler`` or on a local cluster of ``workers``
    processes (default: one per core) on 127.0.0.1. A task is retried :data:`RETRIES` times, on
    another worker when its worker died. Progress: a bar on a terminal, else a line per finished
    task through ``say``.
    """
    from tqdm.auto import tqdm

    results: dict[str, object] = {}
    if not tasks:
        return results
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=len(tasks), unit="cell", desc=desc, disable=not progress)

    def done(key):
        bar.update()
        if not progress and say is not None:
            say(f"{desc}: {len(results)}/{len(tasks)} done ({key})")
    if scheduler is None and workers == 1:
        for key, fn, args in tasks:
            try:
                results[key] = fn(*args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - reported per cell
                results[key] = e
            done(key)
        bar.close()
        return results
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise ConfigError("sweeps on a cluster need Dask: pip install 'memdyn[dask]'") from e
    cluster = None
    try:
        if scheduler is None:
            n = workers or os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)
        else:
            if not re.match(r"^(tcp|tls)://[^\s/]+:\d+$", scheduler):
                raise ConfigError(f"invalid value for scheduler={scheduler!r}: use tcp://HOST:PORT")
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise ConfigError(f"invalid value for scheduler={scheduler!r}: cannot connect ({e})") from e
        with client:
            futures = [client.submit(fn, *args, key=key, pure=False, retries=RETRIES) for key, fn, args in tasks]
            for fut in as_completed(futures):
                try:
                    results[fut.key] = fut.result()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - reported per cell
                    results[fut.key] = e
                done(fut.key)
    finally:
        bar.close()
        if cluster is not None:
            cluster.close()
    return results


def worker_threads(workers: int | None) -> int:
    """torch threads per worker process: the cores shared out (>= 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers or os.cpu_count() or 1))


def run_cell(names: list[str], directory: str, quick: bool, sets: list[str], seed: int, threads: int) -> dict:
    """One cell: ``names`` into the run directory ``directory`` (resumes what it finds there). Its
    per-experiment messages are kept out of the sweep's output."""
    import contextlib
    import io

    import torch

    from .runner import run_suite

    if threads:
        torch.set_num_threads(threads)
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run_suite(names, directory, quick=quick, sets=sets, seed=seed, progress=False)
    return {"claims": summary.claims, "errors": summary.errors}


# -- sweep -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its directory, the merged claims table, and the cells that failed."""

    out: Path
    table: object  # pandas.DataFrame
    errors: dict
    cells: int
    reused: int

    @property
    def ok(self) -> bool:
        return not self.errors


def _slug(point: dict) -> str:
    text = ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items()) or "default"
    return re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", text)


def _finished(directory: Path, experiment: str, config: dict) -> dict | None:
    from .experiments import EXPERIMENTS

    res = RunStore(directory).read_json(f"{experiment}/results.json")
    if res is None or res.get("config") != config or res.get("code") != EXPERIMENTS[experiment].code():
        return None
    return {"claims": [{"experiment": experiment, **c} for c in res["claims"]], "errors": {}}


def sweep(experiment: str, grid: dict[str, list], seeds, out, *, quick: bool = False, sets=(),
          scheduler: str | None = None, workers: int | None = None, progress: bool | None = None,
          say=None) -> SweepResult:
    """Run ``experiment`` at every point of ``grid`` (the product of its value lists) for every seed.

    Parameters
    ----------
    experiment : str
    grid : dict
        {config key: [values]}; see :func:`parse_grid`.
    seeds : iterable of int or str
        Seeds (>= 0), or text for :func:`parse_seeds`.
    out : path
        The sweep directory (rerun with the same arguments to finish an interrupted sweep).
    quick : bool
        Use the experiment's quick form.
    sets : list of str
        Further ``KEY=VALUE`` overrides, the same at every point.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running Dask scheduler; default a local cluster on 127.0.0.1.
    workers : int, optional
        Worker processes of the local cluster (default one per core; 1 runs in this process).
    """
    import pandas as pd

    from .experiments import EXPERIMENTS
    from .runner import resolve_configs

    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {experiment!r}; valid: {', '.join(EXPERIMENTS)}")
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else sorted({int(s) for s in seeds})
    if not seeds or seeds[0] < 0:
        raise ConfigError(f"invalid value for seeds={seeds}: need at least one seed, all >= 0")
    if workers is not None and workers < 1:
        raise ConfigError(f"invalid value for workers={workers}: must be >= 1")
    keys = list(grid)
    for key in keys:
        if "." in key or key not in EXPERIMENTS[experiment].keys():
            raise ConfigError(f"unknown key {key!r} for {experiment}; valid keys: "
                              f"{', '.join(sorted(EXPERIMENTS[experiment].keys()))}")
        if not grid[key]:
            raise ConfigError(f"--grid {key}: no values")
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    configs = {}
    for p in points:  # validate every point before starting anything
        point_sets = list(sets) + [f"{k}={json.dumps(v)}" for k, v in p.items()]
        configs[_slug(p)] = (point_sets, resolve_configs([experiment], quick, point_sets)[experiment].model_dump())
    out = Path(out)
    store = RunStore(out)
    spec = {"experiment": experiment, "grid": grid, "seeds": seeds, "quick": quick, "sets": list(sets)}
    old = store.read_json("sweep.json")
    if old is not None and {k: old.get(k) for k in spec} != spec:
        differ = [k for k in spec if old.get(k) != spec[k]]
        raise ConfigError(f"{out} holds a sweep with other {', '.join(differ)}; use another --out")
    store.write_json("sweep.json", {**spec, "status": "running"})

    cells, done, tasks = [], {}, []
    threads = worker_threads(workers) if scheduler is None else 0
    for p in points:
        slug = _slug(p)
        point_sets, config = configs[slug]
        for s in seeds:
            d = out / "cells" / slug / f"seed-{s}"
            key = f"memdyn-sweep:{experiment}:{slug}:seed-{s}"
            cells.append((key, p, s))
            fin = _finished(d, experiment, config)
            if fin is not None:
                done[key] = fin
            else:
                tasks.append((key, run_cell, ([experiment], str(d), quick, point_sets, s, threads)))
    where = scheduler or f"a local cluster of {workers or os.cpu_count()} workers on 127.0.0.1"
    say(f"sweep {experiment}: {len(points)} grid points x {len(seeds)} seeds = {len(cells)} cells; "
        f"{len(done)} finished earlier, {len(tasks)} to run" + (f" on {where}" if tasks else ""))
    results = {**done, **execute(tasks, scheduler=scheduler, workers=workers, progress=progress, desc=experiment,
                                      say=say)}

    rows, errors = [], {}
    for key, p, s in cells:
        res = results[key]
        if isinstance(res, BaseException):
            errors[key] = f"{type(res).__name__}: {res}"
            continue
        if res["errors"]:
            errors[key] = "; ".join(res["errors"].values())
        for c in res["claims"]:
            rows.append({**p, "seed": s, "id": c["id"], "claim": c["name"], "predicted": c["predicted"],
                         "measured": c["measured"],
                         "se": c.get("se", 0.0), "z": c.get("z"), "holds": bool(c["holds"]),
                         "side": c.get("side", "both"), "kind": c.get("kind", "")})
    table = pd.DataFrame(rows)
    if not rows:
        table = pd.DataFrame(columns=[*keys, "seed", "id", "claim", "predicted", "measured", "se", "z", "holds", "side",
                                      "kind"])
    # z is NA for deterministic claims (no standard error)
    table = table.astype({"z": "Float64", **{k: str for k in keys if not _numeric(grid[k])}})
    store.write_table("sweep.parquet", table)
    fig = figure(table, grid)
    store.write_figure("sweep.png", fig)
    store.write_json("sweep.json", {**spec, "status": "done" if not errors else "errors", "cells": len(cells),
                                    "reused": len(done), "errors": errors})
    _write_report(store, spec, table, errors, len(cells))
    return SweepResult(out, table, errors, len(cells), len(done))


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def figure(table, grid: dict, max_claims: int = 16):
    """One panel per claim: the measured value (mean over seeds, error bar: their standard error)
    and the prediction against the first swept key, one line per value of the other keys."""
    from matplotlib.figure import Figure as MplFigure

    keys = list(grid)
    names = list(dict.fromkeys(table["claim"]))[:max_claims] if len(table) else []
    n = max(1, len(names))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = MplFigure(figsize=(3.8 * cols, 3.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    if not names:
        axes[0].text(0.5, 0.5, "no claims", ha="center", va="center")
        axes[0].axis("off")
        return fig
    x_key = keys[0] if keys else None
    xs = grid[x_key] if x_key else [0]
    numeric = _numeric(xs)
    pos = {json.dumps(v): (v if numeric else i) for i, v in enumerate(xs)}
    others = keys[1:]
    for ax, name in zip(axes, names):
        t = table[table["claim"] == name]
        groups = t.groupby(others, sort=False) if others else [((), t)]
        for j, (label, g) in enumerate(groups):
            agg = g.groupby(x_key, sort=False) if x_key else [(0, g)]
            pts = []
            for xv, h in agg:
                m = h["measured"].to_numpy(dtype=float)
                se = (np.std(m, ddof=1) / math.sqrt(m.size) if m.size > 1 else float(h["se"].iloc[0]))
                pts.append((pos[json.dumps(xv)] if x_key else 0, m.mean(), se, h["predicted"].astype(float).mean(),
                            h["holds"].mean()))
            pts.sort()
            px, pm, pse, ppred, _ = map(np.asarray, zip(*pts))
            lab = ", ".join(f"{k}={v}" for k, v in zip(others, label if isinstance(label, tuple) else (label,)))
            ax.errorbar(px, pm, yerr=pse, fmt="o-", ms=3, color=f"C{j}", label=f"measured {lab}".strip())
            ax.plot(px, ppred, "x--", color=f"C{j}", lw=1, ms=5, label="predicted" if j == 0 else None)
        ax.set_title(name if len(name) < 60 else name[:57] + "...", fontsize=7)
        ax.set_xlabel(x_key or "", fontsize=8)
        if not numeric and x_key:
            ax.set_xticks(range(len(xs)), [str(v) for v in xs], fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _write_report(store: RunStore, spec: dict, table, errors: dict, cells: int) -> None:
    import base64
    import html

    from .store import atomic_write

    keys = list(spec["grid"])
    rows = []
    if len(table):
        for point, g in (table.groupby(keys, sort=False) if keys else [((), table)]):
            point = point if isinstance(point, tuple) else (point,)
            z = g["z"].dropna().to_numpy(dtype=float)
            cells_here = g["seed"].nunique()
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in point)
                        + f"<td>{cells_here}</td><td>{int(g['holds'].sum())}/{len(g)}</td>"
                        + (f"<td>{z.mean():+.2f}</td><td>{z.std(ddof=1) if z.size > 1 else float('nan'):.2f}</td>"
                           if z.size else "<td></td><td></td>") + "</tr>")
    errs = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in errors.items())
    img = base64.b64encode(store.path("sweep.png").read_bytes()).decode()
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>memdyn sweep: {html.escape(spec['experiment'])}"
            "</title><style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:.9em}th,td{border-bottom:1px solid #ddd;padding:.3em .6em;"
            "text-align:right}</style></head><body>"
            f"<h1>memdyn sweep: {html.escape(spec['experiment'])}</h1>"
            f"<p>{cells} cells: grid {html.escape(json.dumps(spec['grid']))} x seeds {spec['seeds'][0]}..{spec['seeds'][-1]} "
            f"({len(spec['seeds'])}), {'quick' if spec['quick'] else 'full'} form. Every claim of every cell is in "
            "<code>sweep.parquet</code> (the swept keys and the seed as columns).</p>"
            f"<table><tr>{head}<th>seeds</th><th>claims holding</th><th>mean z</th><th>sd z</th></tr>{''.join(rows)}"
            "</table>" + (f"<h2>Cells that failed</h2><ul>{errs}</ul>" if errs else "")
            + f"<figure><img style='max-width:100%' src='data:image/png;base64,{img}'><figcaption>Each claim's "
            "measured value (mean over seeds; bars: standard error over seeds) and prediction (dashed) against "
            f"{html.escape(keys[0]) if keys else 'the run'}.</figcaption></figure></body></html>")
    atomic_write(store.path("report.html"), page.encode())
