"""The ``memdyn`` command: list, config, run, report, calibrate, sweep, diffusion train.

Exit codes: 0 all claims hold, or the only failing claims are findings (the theory tested on a real
model, see :mod:`memdyn.claims`); 1 another claim fails or a simulation diverged; 2 bad input (one
line on stderr naming the key, no traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .experiments import EXPERIMENTS
from .experiments.base import ConfigError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="memdyn: memorization as two-time-scale metastable SGD dynamics. Experiments, claims, reports.")


def _fail(msg: str, code: int = 2):
    typer.echo(f"memdyn: {msg}", err=True)
    raise typer.Exit(code)


@app.command("list")
def list_experiments():
    """List the registered experiments, one line each."""
    width = max(len(n) for n in EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        extra = ("  [run by name only: not in the default suite]" if not exp.in_default_suite else
                 "  [the default suite runs its --quick form]" if exp.suite_form == "quick" else "")
        typer.echo(f"{name:<{width}}  {exp.summary}{extra}")


_CONFIG_HELP = ("TOML file of settings ([experiment] tables; `memdyn config EXPERIMENT --toml` writes one); "
                "--set overrides it")


def _with_file(config: Optional[Path], names: list[str], quick: bool, sets: list[str]) -> list[str]:
    """The settings of a --config file (validated, errors naming the file) followed by the --set items."""
    if config is None:
        return list(sets)
    from .configfile import read_config

    return read_config(config, names, quick) + list(sets)


@app.command("config")
def show_config(experiment: str = typer.Argument(..., help="experiment name (see `memdyn list`)"),
                toml: bool = typer.Option(False, "--toml", help="print a TOML template that --config accepts"),
                quick: bool = typer.Option(False, "--quick", help="with --toml: the quick form's values")):
    """Every key of EXPERIMENT: type, default, --quick default and meaning (or, with --toml, a config file)."""
    if experiment not in EXPERIMENTS:
        _fail(f"unknown experiment {experiment!r}; valid: {', '.join(EXPERIMENTS)}")
    if toml:
        from .configfile import template

        typer.echo(template(experiment, quick), nl=False)
        return
    exp = EXPERIMENTS[experiment]
    typer.echo(f"{experiment}: {exp.summary}\n")
    for row in exp.describe():
        quick = "" if row["quick"] == row["default"] else f"  (--quick: {row['quick']})"
        typer.echo(f"  {row['key']}: {row['type']} = {row['default']}{quick}")
        typer.echo(f"      {row['meaning']}")


@app.command("run")
def run(
    experiments: Optional[List[str]] = typer.Argument(None, help="experiments to run (default: all)"),
    quick: bool = typer.Option(False, "--quick", help="smaller, faster version of each experiment"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE or EXPERIMENT.KEY=VALUE (repeatable)"),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
    seed: int = typer.Option(0, "--seed", help="root seed (>= 0)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<timestamp>, linked as runs/latest)"),
    workers: int = typer.Option(1, "--workers", help="experiments run at once, each in its own process (>= 1; the "
                                "results do not depend on it)"),
):
    """Run experiments, write the run directory (config, tables, figures, results.json, report.html)."""
    from .runner import run_suite

    try:
        sets = _with_file(config, experiments or [], quick, set_ or [])
        summary = run_suite(experiments or [], out, quick=quick, sets=sets, seed=seed, workers=workers)
    except ConfigError as e:
        _fail(str(e))
    failed = [c for c in summary.claims if not c["holds"] and not c.get("finding")]
    findings = [c for c in summary.claims if not c["holds"] and c.get("finding")]
    for c in summary.claims:
        mark = "holds" if c["holds"] else "FAILS: finding" if c.get("finding") else "FAILS"
        typer.echo(f"  [{mark}] {c['experiment']}: {c['name']}: predicted {c['predicted']:.5g}, measured "
                   f"{c['measured']:.5g} (95% CI {c['ci_low']:.5g} .. {c['ci_high']:.5g})")
    _time_table(summary)
    typer.echo(f"report: {summary.out / 'report.html'}")
    typer.echo(f"run directory: {summary.out} ({_size(summary.out)})")
    if findings:
        typer.echo(f"memdyn: {len(findings)} finding(s): a real model disagrees with the theory ("
                   + ", ".join(f"{c['experiment']}: {c['id']}" for c in findings)
                   + "); reported, not a failed check (see the report's Theory vs practice)", err=True)
    if summary.errors or failed:
        for name, msg in summary.errors.items():
            typer.echo(f"memdyn: {msg}", err=True)
        if failed:
            typer.echo(f"memdyn: {len(failed)} of {len(summary.claims)} claims fail (not counting findings)", err=True)
        raise typer.Exit(1)


def _size(directory: Path) -> str:
    """The bytes of the files under ``directory``, in B, kB, MB or GB."""
    total = float(sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file()))
    for unit in ("B", "kB", "MB"):
        if total < 1000:
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1000
    return f"{total:.1f} GB"


def _time_table(summary) -> None:
    """Seconds and verdicts per experiment, from the run directory (resumed experiments included)."""
    import json

    res = json.loads((summary.out / "results.json").read_text())
    rows = [(name, res["timings"].get(name), e) for name, e in res["experiments"].items()]
    width = max(len(name) for name, _, _ in rows)
    typer.echo("time per experiment:")
    for name, sec, e in rows:
        verdict = f"{e['hold']}/{e['claims']} claims hold" if e["status"] == "ok" else e["status"]
        typer.echo(f"  {name:<{width}}  {'' if sec is None else f'{sec:7.1f} s'}  {verdict}")
    typer.echo(f"  {'total':<{width}}  {sum(v for v in res['timings'].values()):7.1f} s")


@app.command("calibrate")
def calibrate_cmd(
    experiments: Optional[List[str]] = typer.Argument(None, help="experiments to calibrate (default: all)"),
    seeds: int = typer.Option(20, "--seeds", help="number of seeds (>= 2)"),
    start: int = typer.Option(1000, "--start", help="first seed (>= 0)"),
    full: bool = typer.Option(False, "--full", help="use the full form of each experiment (default: --quick form)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE or EXPERIMENT.KEY=VALUE (repeatable)"),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
    scale: float = typer.Option(1.0, "--scale", help="multiply every experiment's chains / replicates / events"),
    jobs: int = typer.Option(1, "--jobs", help="seeds run in parallel (worker processes of a local Dask cluster)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="tcp://HOST:PORT of a Dask scheduler to use"),
    out: Optional[Path] = typer.Option(None, "--out", help="calibration directory (default runs/calibrate-<timestamp>)"),
):
    """Run experiments over many seeds; report the z distribution of their statistical claims and every failure."""
    import datetime as _dt

    from .calibration import MEAN_MAX, SD_MAX, calibrate

    if out is None:
        out = Path("runs") / f"calibrate-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        sets = _with_file(config, experiments or [], not full, set_ or [])
        cal = calibrate(experiments or [], out, seeds=seeds, start=start, quick=not full, sets=sets, scale=scale,
                        jobs=jobs, scheduler=scheduler)
    except ConfigError as e:
        _fail(str(e))
    for e in cal.experiments:
        s = e.summary
        zs = f"z: n={s.n} mean {s.mean:+.3f} sd {s.sd:.3f} KS p={s.ks_p:.3g}" if s else "no statistical claims"
        mark = "ok " if e.ok else "OFF"
        typer.echo(f"  [{mark}] {e.experiment}: {len(e.seeds)} seeds, {zs}, {len(e.failures)} failing claims"
                   f"{f', {len(e.errors)} errors' if e.errors else ''}")
        for seed, name in e.failures[:5]:
            typer.echo(f"        seed {seed}: {name}")
    typer.echo(f"report: {cal.out / 'report.html'}")
    if not cal.ok:
        typer.echo(f"memdyn: calibration is off (a failing claim, or sd > {SD_MAX} or |mean| > {MEAN_MAX})", err=True)
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    experiment: str = typer.Argument(..., help="experiment to sweep (see `memdyn list`)"),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="KEY=V1,V2,... (repeatable: the grid is the product)"),
    seeds: str = typer.Option("0", "--seeds", help="seeds: FIRST-LAST and/or a comma list, e.g. 0-19"),
    quick: bool = typer.Option(False, "--quick", help="the experiment's smaller, faster form"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE fixed at every grid point (repeatable)"),
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP + " (fixed at every grid point)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="tcp://HOST:PORT of a Dask scheduler "
                                            "(default: a local cluster on 127.0.0.1)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="local cluster worker processes (default: one per "
                                          "core; 1 runs in this process)"),
    out: Optional[Path] = typer.Option(None, "--out", help="sweep directory (default runs/sweep-<experiment>-<timestamp>)"),
):
    """Run one experiment over a grid of config values and seeds, one Dask task per cell; merge the claims into
    sweep.parquet and a report. Rerun the same command to finish an interrupted sweep."""
    import datetime as _dt

    from .sweep import parse_grid, sweep

    if out is None:
        out = Path("runs") / f"sweep-{experiment}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        sets = _with_file(config, [experiment], quick, set_ or [])
        res = sweep(experiment, parse_grid(grid), seeds, out, quick=quick, sets=sets, scheduler=scheduler,
                    workers=workers)
    except ConfigError as e:
        _fail(str(e))
    t = res.table
    typer.echo(f"{res.cells} cells ({res.reused} finished earlier), {len(t)} claims: "
               f"{int(t['holds'].sum()) if len(t) else 0} hold")
    typer.echo(f"table: {res.out / 'sweep.parquet'}")
    typer.echo(f"report: {res.out / 'report.html'}")
    if res.errors:
        for key, msg in res.errors.items():
            typer.echo(f"memdyn: {key}: {msg}", err=True)
        raise typer.Exit(1)


@app.command("report")
def report(directory: Path = typer.Argument(..., help="a run directory")):
    """(Re)write DIR/report.html from the run's results."""
    from .runner import finalize
    from .store import RunStore

    if not (directory / "config.json").exists():
        _fail(f"{directory} is not a memdyn run directory (no config.json)")
    try:
        summary = finalize(RunStore(directory))
    except ValueError as e:  # e.g. results written before claims had ids: the comparisons cannot pair them
        _fail(f"{directory}: cannot write the report: {e}; rerun the experiments into a new --out")
    typer.echo(str(summary.out / "report.html"))


diffusion_app = typer.Typer(add_completion=False, no_args_is_help=True,
                            help="Train small diffusion models offline with the memorization monitor attached.")
app.add_typer(diffusion_app, name="diffusion")


@diffusion_app.command("train")
def diffusion_train(
    dataset: str = typer.Option("mnist5k", "--dataset", help="mnist5k, mnist5k-14, mnist5k-7, digits8 or gmm"),
    n: int = typer.Option(64, "--n", help="training items (class balanced, >= 2)"),
    model: str = typer.Option("mlp", "--model", help="mlp, unet, or optimal (the empirical-optimal denoiser)"),
    prediction: str = typer.Option("x0", "--prediction", help="x0, v or eps"),
    width: int = typer.Option(256, "--width", help="MLP width / U-Net base channels"),
    steps: int = typer.Option(1500, "--steps", help="optimizer steps"),
    lr: float = typer.Option(1e-3, "--lr", help="constant learning rate"),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or sgd"),
    batch: int = typer.Option(64, "--batch", help="batch size"),
    ema: Optional[float] = typer.Option(None, "--ema", help="EMA decay in (0, 1); the monitor samples the EMA model"),
    every: int = typer.Option(100, "--every", help="steps between the monitor's checkpoints"),
    probes: int = typer.Option(64, "--probes", help="probe noises"),
    sample_steps: int = typer.Option(20, "--sample-steps", help="DDIM steps per sample"),
    seed: int = typer.Option(0, "--seed", help="seed (>= 0)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/diffusion-<timestamp>); "
                                                           "rerun with the same settings to resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
):
    """Train a denoiser with the memorization monitor; write history, figures and report.html to OUT."""
    import datetime as _dt

    from pydantic import ValidationError

    from .diffusion.session import TrainConfig, config_error, train_run

    try:
        cfg = TrainConfig(dataset=dataset, n=n, model=model, prediction=prediction, width=width, steps=steps, lr=lr,
                          optimizer=optimizer, batch=batch, ema=ema, every=every, probes=probes,
                          sample_steps=sample_steps, seed=seed)
    except ValidationError as e:
        _fail(config_error(e))
    if out is None:
        out = Path("runs") / f"diffusion-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        run = train_run(cfg, out, progress=progress)
    except (ValueError, ImportError) as e:
        _fail(str(e))
    fm = run.f_mem
    typer.echo(f"f_mem: {fm['f_mem'].iloc[0]:.2f} at step {int(fm['step'].iloc[0])} -> {fm['f_mem'].iloc[-1]:.2f} "
               f"at step {int(fm['step'].iloc[-1])} (95% CI {fm['ci_low'].iloc[-1]:.2f} .. {fm['ci_high'].iloc[-1]:.2f}); "
               f"{run.seconds:.0f} s")
    typer.echo(f"report: {run.out / 'report.html'}")


def main():
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("memdyn: interrupted; rerun the same command to finish what is missing", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
