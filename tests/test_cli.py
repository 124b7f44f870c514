"""The memdyn command as a user runs it, in a temporary directory."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

EXE = [sys.executable, "-m", "memdyn.cli"]


def memdyn(*args, cwd, timeout=600):
    return subprocess.run([*EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def memdyn_here(*args, cwd):
    """The same command in this process (typer's test runner; no interpreter start-up), for checks of what it
    prints and its exit code; an exception that escapes the CLI is re-raised, as a traceback would show."""
    from typer.testing import CliRunner

    from memdyn.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def test_list_and_config(tmp_path):
    out = memdyn("list", cwd=tmp_path)
    assert out.returncode == 0 and "timescales" in out.stdout and "gibbs" in out.stdout
    out = memdyn("config", "timescales", cwd=tmp_path)
    assert out.returncode == 0
    for key in ("step", "sigma", "eps", "chains"):
        assert f"  {key}: " in out.stdout


@pytest.mark.parametrize("name, args, needle", [
    ("timescales", ["--set", "step=-1"], "timescales.step=-1"),
    ("timescales", ["--set", "nosuch=1"], "unknown key 'nosuch' for timescales; valid keys: chains"),
    ("timescales", ["--set", "eps=[0.1]"], "timescales.eps"),
    ("timescales", ["--seed", "-1"], "seed"),
    ("memorization", ["--set", "bandwidth=0"], "memorization.bandwidth=0"),
    ("memorization", ["--set", "bandwidth=0.5"], "memorization.bandwidth=0.5"),
    ("memorization", ["--set", "c=1.5"], "memorization.c=1.5"),
    ("memorization", ["--set", "alpha=1.2"], "memorization.alpha=1.2"),
    ("memorization", ["--set", "eps=0"], "memorization.eps=0"),
    ("memorization", ["--set", "n_train=1"], "memorization.n_train=1"),
    ("memorization", ["--set", "probes=500", "--set", "chains=100"], "memorization.probes=500"),
    ("memorization", ["--set", "sigma=20"], "too high for exits within the budget"),
    ("memorization", ["--set", "step=3e-3"], "memorization.step"),
    ("noise-mitigation", ["--set", "alpha_low=1.5"], "noise-mitigation.alpha_low=1.5"),
    ("noise-mitigation", ["--set", "sigma_factor=1.6"], "noise-mitigation.sigma_factor"),
    ("double-descent", ["--set", "eps=0,0.01,0.02"], "double-descent.eps"),
    ("double-descent", ["--set", "c_end=0.3"], "memorizing well never vanishes"),
    ("double-descent", ["--set", "kappa=2"], "generalizing well never"),
    ("double-descent", ["--set", "sigma=0"], "double-descent.sigma=0"),
    ("hysteresis", ["--set", "c_end=0.5"], "hysteresis.c_end"),
    ("hysteresis", ["--set", "eps=0.001"], "hysteresis.eps"),
    ("hysteresis", ["--set", "x_start=-1"], "within 0.5 of the generalizing minimum"),
    ("diffusion-tau-mem", ["--set", "ns=[8,16,32,16]"], "increasing, each >= 8"),
    ("diffusion-tau-mem", ["--set", "ns=[8,16,32]"], "diffusion-tau-mem.ns"),
    ("diffusion-calibration", ["--set", "dataset=gmm"], "diffusion-calibration.dataset"),
    ("diffusion-episodes", ["--set", "lrs=[0.04,0.01,0.02]"], "diffusion-episodes.lrs"),
    ("diffusion-episodes", ["--set", "ema_lrs=[0.003]"], "diffusion-episodes.ema_lrs"),
    ("diffusion-episodes", ["--set", "ema_time=5"], "diffusion-episodes.ema_time=5.0: the EMA needs a burn-in"),
    ("diffusion-episodes", ["--set", "window_time=1"], "diffusion-episodes.window_time=1"),
    ("self-consuming", ["--set", "alpha=0.01"], "self-consuming.alpha=0.01"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, name, args, needle):
    out = memdyn_here("run", name, "--quick", *args, "--out", "D", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_default_suite_runs_the_quick_form_of_long_experiments():
    from memdyn.experiments import DEFAULT_SUITE, EXPERIMENTS
    from memdyn.runner import resolve_configs

    suite = resolve_configs([], quick=False, sets=[])
    assert list(suite) == DEFAULT_SUITE and "diffusion-calibration" in DEFAULT_SUITE
    for name in ("diffusion-tau-mem", "diffusion-episodes"):
        assert suite[name] == EXPERIMENTS[name].resolve(True)  # the suite runs the quick form
        assert resolve_configs([name], quick=False, sets=[])[name] == EXPERIMENTS[name].resolve(False)  # named: full
    assert suite["gibbs"] == EXPERIMENTS["gibbs"].resolve(False)
    assert "self-consuming" in EXPERIMENTS and "self-consuming" not in DEFAULT_SUITE  # run by name only
    out = memdyn("list", cwd=Path.cwd())
    assert "diffusion-episodes" in out.stdout and "runs its --quick form" in out.stdout


def test_unknown_experiment(tmp_path):
    out = memdyn("run", "nosuch", cwd=tmp_path)  # the command itself: exit 2, one line, no traceback
    assert out.returncode == 2 and "unknown experiment 'nosuch'" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_unstable_step_reports_divergence_without_nan(tmp_path):
    out = memdyn("run", "timescales", "--quick", "--set", "step=0.5", "--out", "D", cwd=tmp_path)
    assert out.returncode == 1
    assert "diverged at step" in out.stderr and "chain" in out.stderr and "Traceback" not in out.stderr
    assert not list((tmp_path / "D").rglob("*.parquet"))
    for p in (tmp_path / "D").rglob("*.json"):
        assert "NaN" not in p.read_text()


def test_quick_timescales_end_to_end_and_reproducible(tmp_path):
    out = memdyn("run", "timescales", "--quick", "--set", "step=0.08", "--seed", "3", "--out", "A", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "A/results.json").read_text())
    assert res["all_hold"] and len(res["claims"]) >= 10
    assert all(c["experiment"] == "timescales" for c in res["claims"])
    assert {"name", "predicted", "measured", "ci_low", "ci_high", "tolerance", "holds"} <= set(res["claims"][0])
    assert set(res["versions"]) >= {"numpy", "torch", "python"} and res["timings"]["timescales"] > 0
    table = out.stdout.split("time per experiment:")[1]
    n = len(res["claims"])
    assert re.search(rf"timescales +[0-9.]+ s +{n}/{n} claims hold", table) and re.search(r"total +[0-9.]+ s", table)
    size = float(re.search(r"run directory: A \(([0-9.]+) kB\)", out.stdout).group(1))  # it ends with its size
    assert abs(size * 1000 - sum(p.stat().st_size for p in (tmp_path / "A").rglob("*") if p.is_file())) < 100
    for t in ("covariance", "relaxation", "tracking"):
        df = pd.read_parquet(tmp_path / f"A/timescales/tables/{t}.parquet")
        assert len(df) and not df.isna().any().any()
    html = (tmp_path / "A/report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert html.index("<b>Prediction.</b>") < html.index("<figure>") < html.index("<table>")  # a walk: claim, figure, verdicts
    cfg = json.loads((tmp_path / "A/config.json").read_text())
    assert cfg["experiments"]["timescales"]["step"] == 0.08
    # same seed, new directory: identical measurements
    memdyn("run", "timescales", "--quick", "--set", "step=0.08", "--seed", "3", "--out", "B", cwd=tmp_path)
    res_b = json.loads((tmp_path / "B/results.json").read_text())
    assert [c["measured"] for c in res_b["claims"]] == [c["measured"] for c in res["claims"]]
    # report subcommand rewrites the report
    rep = memdyn("report", "A", cwd=tmp_path)
    assert rep.returncode == 0 and rep.stdout.strip().endswith("report.html")
    # results without claim ids (an older run) cannot be paired: one line, exit 2, no traceback
    (tmp_path / "old").mkdir()
    (tmp_path / "old/config.json").write_text(json.dumps({"seed": 0, "experiments": {"diffusion-episodes": {}}}))
    (tmp_path / "old/diffusion-episodes").mkdir()
    from memdyn.claims import claim

    before_ids = {k: v for k, v in claim("x", "larger steps, shorter episodes", 0.0, 1.0, 0.1).to_dict().items() if k != "id"}
    (tmp_path / "old/diffusion-episodes/results.json").write_text(json.dumps({"claims": [before_ids], "seconds": 1.0,
                                                                              "figures": [], "tables": [], "summary": {}}))
    old = memdyn("report", "old", cwd=tmp_path)
    assert old.returncode == 2 and "has no claim with id" in old.stderr and "Traceback" not in old.stderr
    # a different config into the same directory is refused
    clash = memdyn("run", "timescales", "--quick", "--set", "step=0.07", "--seed", "3", "--out", "A", cwd=tmp_path)
    assert clash.returncode == 2 and "different config" in clash.stderr


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ["run", "timescales", "gibbs", "--quick", "--set", "gibbs.chains=400", "--set", "gibbs.mix=3",
            "--set", "gibbs.steps=0.0158,0.0178,0.0198", "--set", "gibbs.events=50", "--out", "K"]
    proc = subprocess.Popen([*EXE, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done = tmp_path / "K/timescales/results.json"
    t0 = time.time()
    while not done.exists() and time.time() - t0 < 300:
        time.sleep(0.2)
    cells = tmp_path / "K/gibbs/cells"
    while not (cells.exists() and any(cells.glob("*.npz"))) and time.time() - t0 < 300:
        time.sleep(0.05)  # kill once gibbs has stored a cell and before it finishes
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done.exists() and not (tmp_path / "K/results.json").exists()
    stamp = done.stat().st_mtime_ns
    kept = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.npz")}
    assert kept and not (tmp_path / "K/gibbs/results.json").exists()
    out = memdyn(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "timescales: finished earlier" in out.stderr
    assert done.stat().st_mtime_ns == stamp  # not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.npz") if p.name in kept} == kept  # cells reused
    ref = memdyn(*args[:-1], "REF", cwd=tmp_path)
    assert ref.returncode == 0
    a = json.loads((tmp_path / "K/results.json").read_text())["claims"]
    b = json.loads((tmp_path / "REF/results.json").read_text())["claims"]
    assert a == b
    for t in ("gibbs/tables/occupation.parquet", "timescales/tables/covariance.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "K" / t), pd.read_parquet(tmp_path / "REF" / t))


def test_calibrate_reports_z_distribution_and_resumes(tmp_path):
    args = ["calibrate", "degeneration", "--seeds", "3", "--start", "500", "--set", "replicates=100",
            "--set", "relax=8", "--out", "C"]
    out = memdyn(*args, cwd=tmp_path)
    assert out.returncode in (0, 1), out.stderr
    cal = json.loads((tmp_path / "C/calibration.json").read_text())
    (exp,) = cal["experiments"]
    assert exp["experiment"] == "degeneration" and exp["seeds"] == [500, 501, 502]
    n_stat = sum(c["z"] is not None and c["side"] == "both" for s in (500, 501, 502)
                 for c in json.loads((tmp_path / f"C/seed-{s}/results.json").read_text())["claims"])
    assert len(exp["z"]) == n_stat > 0 and exp["summary"]["n"] == n_stat
    assert (tmp_path / "C/calibration.png").stat().st_size > 10_000 and (tmp_path / "C/report.html").exists()
    assert "degeneration: 3 seeds, z: n=" in out.stdout
    stamp = (tmp_path / "C/seed-500/degeneration/results.json").stat().st_mtime_ns
    again = memdyn(*args, cwd=tmp_path)  # a rerun reuses every finished seed
    assert again.returncode == out.returncode
    assert (tmp_path / "C/seed-500/degeneration/results.json").stat().st_mtime_ns == stamp
    bad = memdyn("calibrate", "degeneration", "--seeds", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "seeds=1" in bad.stderr and "Traceback" not in bad.stderr


def test_diffusion_train_end_to_end_and_resume(tmp_path):
    args = ["diffusion", "train", "--dataset", "digits8", "--n", "16", "--width", "32", "--steps", "120", "--every",
            "40", "--probes", "8", "--sample-steps", "5", "--out", "D", "--no-progress"]
    out = memdyn(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "f_mem:" in out.stdout and "report:" in out.stdout
    d = tmp_path / "D"
    for f in ("report.html", "history.parquet", "f_mem.parquet", "episodes.parquet", "raster.png", "samples.png",
              "f_mem.png", "checkpoint.pt"):
        assert (d / f).exists(), f
    hist = pd.read_parquet(d / "history.parquet")
    assert hist["step"].unique().tolist() == [0, 40, 80, 120] and len(hist) == 32
    # rerun with more steps and the same settings otherwise: refused (other settings), then resumed with the same
    again = memdyn(*[a if a != "120" else "200" for a in args], cwd=tmp_path)
    assert again.returncode == 2 and "other settings (steps)" in again.stderr
    same = memdyn(*args, cwd=tmp_path)
    assert same.returncode == 0
    assert pd.read_parquet(d / "history.parquet").equals(hist)


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "cifar10"], "dataset"),
    (["--n", "1"], "n:"),
    (["--every", "0"], "every:"),
    (["--lr", "-1"], "lr:"),
    (["--model", "transformer"], "model:"),
    (["--dataset", "gmm", "--model", "unet"], "needs image data"),
])
def test_diffusion_train_bad_input_exits_2(tmp_path, args, needle):
    out = memdyn_here("diffusion", "train", *args, "--steps", "1", "--out", "D", "--no-progress", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr


def test_config_file_template_runs_and_bad_entries_exit_2_naming_the_file(tmp_path):
    """`memdyn config EXP --toml` writes a file that --config takes unchanged; --set overrides it; the run
    keeps config.toml, which runs it again as it was; a bad key, value or syntax exits 2 with one line."""
    tpl = memdyn_here("config", "gibbs", "--toml", cwd=tmp_path)
    assert tpl.returncode == 0 and "[gibbs]" in tpl.stdout and "\nsigma = 3.0\n" in tpl.stdout
    (tmp_path / "g.toml").write_text(tpl.stdout.replace("\nsaddle = 0.2\n", "\nsaddle = 0.17\n"))
    out = memdyn("run", "gibbs", "--quick", "--config", "g.toml", "--set", "sigma=3.1", "--out", "D", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    used = json.loads((tmp_path / "D/config.json").read_text())["experiments"]["gibbs"]
    assert used["saddle"] == 0.17 and used["sigma"] == 3.1 and used["chains"] == 2000  # the quick form's chains
    again = memdyn_here("run", "gibbs", "--config", "D/config.toml", "--out", "D", cwd=tmp_path)  # same config: reused
    assert again.returncode == 0 and "finished earlier" in again.stderr
    text = tpl.stdout
    bad = {"misspelt.toml": (text.replace("\nsigma = 3.0", "\nsigmaa = 3.0"), "unknown key 'sigmaa' for gibbs"),
           "range.toml": (text.replace("\nsigma = 3.0", "\nsigma = -1.0"), "invalid value for gibbs.sigma=-1.0: Input "
                                                                          "should be greater than 0"),
           "syntax.toml": ("[gibbs]\nsigma = \n", "not valid TOML"),
           "table.toml": ("[gibs]\nsigma = 2\n", "unknown experiment table [gibs]")}
    for name, (content, needle) in bad.items():
        (tmp_path / name).write_text(content)
        cmds = [["run", "gibbs", "--quick"]] + ([["sweep", "gibbs", "--seeds", "0"], ["calibrate", "gibbs"]]
                                               if name == "range.toml" else [])
        for cmd in cmds:  # in this process; test_unknown_experiment and the sweep tests start the command itself
            r = memdyn_here(*cmd, "--config", name, "--out", "E", cwd=tmp_path)
            assert r.returncode == 2 and r.stderr.count("\n") == 1, (cmd, r.stderr)
            assert r.stderr.startswith(f"memdyn: {name}: ") and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "E").exists()


@pytest.mark.parametrize("quick", [False, True])
def test_every_experiments_template_is_accepted_unchanged(tmp_path, quick):
    from memdyn.configfile import read_config, template
    from memdyn.experiments import EXPERIMENTS
    from memdyn.runner import resolve_configs

    for name, exp in EXPERIMENTS.items():
        f = tmp_path / f"{name}.toml"
        f.write_text(template(name, quick))
        items = read_config(f, [name], quick)
        assert resolve_configs([name], quick, items)[name] == exp.resolve(quick)  # the defaults of that form


@pytest.mark.parametrize("finding, code", [(True, 0), (False, 1)])
def test_a_failing_finding_is_reported_without_failing_the_run(tmp_path, monkeypatch, finding, code):
    """A claim that tests the theory on a real model may fail as a finding: reported (FAILS: finding,
    and in stderr), exit 0; the same claim as a check fails the run."""
    from typer.testing import CliRunner

    from memdyn import runner
    from memdyn.claims import claim
    from memdyn.cli import app

    claims = [{"experiment": "x", **claim("law", "a real model follows the law", 0.0, 9.0, 1.0,
                                          finding=finding).to_dict()},
              {"experiment": "x", **claim("settled", "the window settled", 0.0, 0.1, 1.0).to_dict()}]
    (tmp_path / "results.json").write_text(json.dumps({"timings": {"x": 1.0}, "experiments": {
        "x": {"status": "ok", "claims": 2, "hold": 1}}}))
    monkeypatch.setattr(runner, "run_suite", lambda *a, **k: runner.RunSummary(tmp_path, claims, {}))
    out = CliRunner().invoke(app, ["run", "x"])
    assert out.exit_code == code, out.output
    assert ("FAILS: finding" in out.output) == finding and ("finding(s)" in out.output) == finding
    summary = runner.RunSummary(tmp_path, claims, {})
    assert not summary.all_hold and summary.checks_hold == finding
