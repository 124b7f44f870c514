"""Calibration: run experiments over many seeds and check that their verdicts can be trusted.

For every statistical two-sided claim the standardised residual
z = (measured - predicted) / sqrt(se^2 + predicted_se^2) is collected over seeds. When the
prediction is exact for the simulated system and the standard error is right, z is N(0, 1): its
mean near 0, its sd near 1, and a Kolmogorov-Smirnov test against N(0, 1) does not reject. A
distribution that is off (sd > 1.3 or |mean| > 0.5) points at burn-in, correlated samples,
a rare-event estimator with too few events or a biased prediction, and must be fixed, not
tolerated. Failures (claims that do not hold) are counted for every claim, deterministic ones
included.

Each seed is an ordinary run directory under ``<out>/seed-<seed>``, so an interrupted
calibration resumes where it stopped (finished seeds and experiments are reused). Seeds run
through :func:`memdyn.sweep.execute`: in this process, or one Dask task per seed.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .stats import ZSummary, z_summary
from .store import RunStore
from .sweep import execute, run_cell, worker_threads

__all__ = ["ExperimentCalibration", "Calibration", "calibrate", "SD_MAX", "MEAN_MAX"]

#: a z distribution with a larger sd or |mean| is "off"
SD_MAX, MEAN_MAX = 1.3, 0.5


@dataclass(frozen=True)
class ExperimentCalibration:
    """One experiment over many seeds.

    Attributes
    ----------
    experiment : str
    seeds : list of int
    claims : int
        Claims per run.
    failures : list of (seed, claim name)
        Claims that did not hold.
    z : ndarray
        Standardised residuals of the statistical two-sided claims, all seeds pooled.
    summary : ZSummary or None
        None when the experiment has fewer than 2 statistical claims over all seeds.
    errors : list of (seed, message)
        Runs that stopped (divergence, nothing to measure).
    """

    experiment: str
    seeds: list
    claims: int
    failures: list
    z: np.ndarray
    summary: ZSummary | None
    errors: list

    @property
    def off(self) -> bool:
        return self.summary is not None and self.summary.off(SD_MAX, MEAN_MAX)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors and not self.off

    def to_dict(self) -> dict:
        return {"experiment": self.experiment, "seeds": list(self.seeds), "claims": self.claims,
                "failures": [list(f) for f in self.failures], "errors": [list(e) for e in self.errors],
                "z": [float(v) for v in self.z], "summary": asdict(self.summary) if self.summary else None,
                "off": self.off, "ok": self.ok}


@dataclass(frozen=True)
class Calibration:
    out: Path
    experiments: list

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.experiments)


def calibrate(names: list[str], out, *, seeds: int = 20, start: int = 1000, quick: bool = True, sets=(),
              scale: float = 1.0, jobs: int = 1, scheduler: str | None = None, say=None) -> Calibration:
    """Run ``names`` (all experiments when empty) for seeds ``start .. start + seeds - 1`` into
    ``out/seed-<seed>`` and summarise the z distribution of every experiment's claims.

    Parameters
    ----------
    names : list of str
    out : path
    seeds : int
        Number of seeds (>= 2).
    start : int
        First seed (>= 0); the default keeps away from the seeds used in tests and the default run.
    quick : bool
        Use the experiments' quick forms.
    sets : list of str
        ``KEY=VALUE`` overrides, as for ``memdyn run``.
    scale : float
        Multiply every experiment's sample sizes (its ``sample_keys``: chains, replicates, events)
        by this factor: a verdict that changes with the sample size points at a bias.
    jobs : int
        Seeds run in parallel: worker processes of a local Dask cluster on 127.0.0.1 (each with
        ``cpu_count // jobs`` torch threads); 1 runs them in this process.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a Dask scheduler to run the seeds on instead (see :mod:`memdyn.sweep`).
    say : callable, optional
        Progress messages (default: stderr).
    """
    from .experiments import DEFAULT_SUITE, EXPERIMENTS
    from .experiments.base import ConfigError
    from .runner import resolve_configs

    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if seeds < 2:
        raise ConfigError(f"invalid value for seeds={seeds}: need >= 2")
    if start < 0:
        raise ConfigError(f"invalid value for start={start}: must be >= 0")
    if jobs < 1:
        raise ConfigError(f"invalid value for jobs={jobs}: must be >= 1")
    names = list(names) or list(DEFAULT_SUITE)
    if not scale > 0:
        raise ConfigError(f"invalid value for scale={scale}: must be > 0")
    configs = resolve_configs(names, quick, list(sets))  # validate before starting anything
    if scale != 1:
        sets = list(sets) + [f"{n}.{k}={v}" for n in names for k, v in EXPERIMENTS[n].scaled(configs[n], scale).items()]
        resolve_configs(names, quick, sets)
    out = Path(out)
    store = RunStore(out)
    seed_list = list(range(start, start + seeds))
    threads = worker_threads(jobs) if jobs > 1 and scheduler is None else 0
    tasks = [(f"memdyn-calibrate:seed-{s}", run_cell, (names, str(out / f"seed-{s}"), quick, list(sets), s, threads))
             for s in seed_list]
    say(f"calibrate: {len(names)} experiments x {len(seed_list)} seeds"
        + (f" on {scheduler}" if scheduler else f" on {jobs} local workers" if jobs > 1 else ""))
    done = execute(tasks, scheduler=scheduler, workers=None if scheduler else jobs, desc="calibrate", say=say)
    results: dict[int, dict] = {}
    for s in seed_list:
        res = done[f"memdyn-calibrate:seed-{s}"]
        results[s] = ({"claims": [], "errors": {n: f"{type(res).__name__}: {res}" for n in names}}
                      if isinstance(res, BaseException) else res)
    exps = []
    for name in names:
        z, failures, errors, n_claims = [], [], [], 0
        for s in seed_list:
            res = results[s]
            if name in res["errors"]:
                errors.append((s, res["errors"][name]))
            mine = [c for c in res["claims"] if c["experiment"] == name]
            n_claims = max(n_claims, len(mine))
            for c in mine:
                if not c["holds"]:
                    failures.append((s, c["name"]))
                if c.get("z") is not None and c.get("side", "both") == "both":
                    z.append(c["z"])
        z = np.asarray(z, dtype=np.float64)
        exps.append(ExperimentCalibration(name, seed_list, n_claims, failures, z,
                                          z_summary(z) if z.size >= 2 else None, errors))
    cal = Calibration(out, exps)
    store.write_json("calibration.json", {"seeds": seed_list, "quick": quick, "sets": list(sets), "scale": scale,
                                          "sd_max": SD_MAX, "mean_max": MEAN_MAX, "ok": cal.ok,
                                          "experiments": [e.to_dict() for e in exps]})
    store.write_figure("calibration.png", figure(exps))
    _write_report(store, cal)
    return cal


def figure(exps):
    """One panel per experiment: histogram of z against the N(0, 1) density."""
    from matplotlib.figure import Figure as MplFigure
    from scipy.stats import norm

    n = len(exps)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = MplFigure(figsize=(3.6 * cols, 2.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    grid = np.linspace(-4.5, 4.5, 200)
    for ax, e in zip(axes, exps):
        if e.z.size:
            ax.hist(np.clip(e.z, -4.5, 4.5), bins=np.linspace(-4.5, 4.5, 19), density=True, color="C0", alpha=0.7)
        ax.plot(grid, norm.pdf(grid), color="k", lw=1)
        s = e.summary
        head = f"{e.experiment}"
        sub = (f"n={s.n}, mean {s.mean:+.2f}, sd {s.sd:.2f}, KS p={s.ks_p:.2g}" if s else "no statistical claims")
        ax.set_title(f"{head}\n{sub}", fontsize=8, color="C3" if not e.ok else "k")
        ax.set_xlabel(f"z ({len(e.failures)} failing claims)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _write_report(store: RunStore, cal: Calibration) -> None:
    import base64
    import html

    from .store import atomic_write

    rows = []
    for e in cal.experiments:
        s = e.summary
        cells = (f"<td>{s.n}</td><td>{s.mean:+.3f}</td><td>{s.sd:.3f}</td><td>{s.ks_p:.3g}</td>" if s else
                 "<td colspan=4>no statistical claims</td>")
        verdict = "<span class='ok'>ok</span>" if e.ok else "<span class='bad'>off</span>"
        rows.append(f"<tr><td class='name'>{html.escape(e.experiment)}</td><td>{len(e.seeds)}</td><td>{e.claims}</td>"
                    f"{cells}<td>{len(e.failures)}</td><td>{len(e.errors)}</td><td>{verdict}</td></tr>")
        for seed, name in e.failures[:20]:
            rows.append(f"<tr><td></td><td colspan=9 class='name'>seed {seed}: fails: {html.escape(name)}</td></tr>")
    img = base64.b64encode(store.path("calibration.png").read_bytes()).decode()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>memdyn calibration</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;width:100%;font-size:.9em}th,td{border-bottom:1px solid #ddd;"
            "padding:.3em .5em;text-align:right}td.name,th.name{text-align:left}.ok{color:#11772f;font-weight:600}"
            ".bad{color:#b00020;font-weight:600}</style></head><body><h1>memdyn calibration</h1>"
            f"<p>z = (measured - predicted) / se of every statistical two-sided claim, pooled over seeds; a trustworthy "
            f"experiment has z ~ N(0, 1) (off when sd &gt; {SD_MAX} or |mean| &gt; {MEAN_MAX}) and no failing claim.</p>"
            "<table><tr><th class='name'>experiment</th><th>seeds</th><th>claims/run</th><th>z values</th>"
            "<th>mean z</th><th>sd z</th><th>KS p</th><th>failures</th><th>errors</th><th>verdict</th></tr>"
            + "".join(rows) + f"</table><figure><img style='max-width:100%' src='data:image/png;base64,{img}'>"
            "<figcaption>Histograms of z per experiment against the N(0, 1) density.</figcaption></figure>"
            "</body></html>")
    atomic_write(store.path("report.html"), page.encode())
