"""Sweeps and calibration on a real Dask cluster on 127.0.0.1 (the memdyn[dask] extra)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from memdyn.experiments.base import ConfigError
from memdyn.sweep import parse_grid, parse_seeds, sweep

distributed = pytest.importorskip("distributed")

EXE = [sys.executable, "-m", "memdyn.cli"]
# a small gibbs: three steps, few chains (about 2 s per cell)
GIBBS = ["--quick", "--set", "chains=400", "--set", "mix=3", "--set", "events=50", "--set", "steps=0.0158,0.0178,0.0198"]


def test_grid_and_seed_parsing():
    assert parse_grid(["sigma=2.8,3.2", "steps=[0.1,0.2],[0.2,0.3]"]) == {"sigma": [2.8, 3.2],
                                                                          "steps": [[0.1, 0.2], [0.2, 0.3]]}
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7] and parse_seeds("5") == [5]
    for bad, msg in ((["sigma"], "KEY=V1"), (["sigma=1,1"], "repeated"), (["a=1", "a=2"], "twice"), (["a=1,,2"], "empty")):
        with pytest.raises(ConfigError, match=msg):
            parse_grid(bad)
    for bad in ("3-1", "x", "-2"):
        with pytest.raises(ConfigError, match="seeds"):
            parse_seeds(bad)


def test_sweep_validates_everything_before_running(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'sigmaa' for gibbs"):
        sweep("gibbs", {"sigmaa": [1.0]}, [0], tmp_path / "a", workers=1)
    with pytest.raises(ConfigError, match="gibbs.sigma"):
        sweep("gibbs", {"sigma": [3.0, -1.0]}, [0], tmp_path / "b", workers=1)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="unknown experiment"):
        sweep("gibs", {}, [0], tmp_path / "c", workers=1)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                     silence_logs=40)
    assert c.scheduler_address.startswith("tcp://127.0.0.1:")
    yield c
    c.close()


def test_sweep_survives_a_killed_worker_and_merges_every_cell(tmp_path, cluster):
    from distributed import Client

    killed = []

    def kill_a_busy_worker():
        with Client(cluster.scheduler_address) as client:
            t0 = time.time()
            while time.time() - t0 < 120:
                busy = [w for w, keys in client.processing().items() if any("memdyn-sweep" in str(k) for k in keys)]
                if busy:
                    time.sleep(1.0)  # well inside the task
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)  # this worker's own process, by its pid
                    killed.append(pid)
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    res = sweep("gibbs", {"sigma": [2.8, 3.2]}, "0-1", tmp_path / "S", quick=True, sets=GIBBS[2::2],
                scheduler=cluster.scheduler_address,
                progress=False)
    killer.join()
    assert killed, "no worker was seen running a cell"
    assert res.ok and res.cells == 4 and res.reused == 0
    t = pd.read_parquet(tmp_path / "S/sweep.parquet")
    assert set(zip(t["sigma"], t["seed"])) == {(2.8, 0), (2.8, 1), (3.2, 0), (3.2, 1)}
    assert {"claim", "predicted", "measured", "se", "z", "holds"} <= set(t.columns)
    per_cell = t.groupby(["sigma", "seed"]).size()
    assert per_cell.nunique() == 1 and per_cell.iloc[0] >= 5  # every cell has all of gibbs' claims
    # the measured occupation ratio depends on sigma as the theory's prediction does
    pred = t.groupby("sigma")["predicted"].first()
    assert (tmp_path / "S/report.html").read_text().count("<tr>") >= 3 and pred.notna().all()


def test_calibration_runs_its_seeds_on_the_cluster(tmp_path, cluster):
    from memdyn.calibration import calibrate

    cal = calibrate(["degeneration"], tmp_path / "C", seeds=2, start=600, sets=["replicates=100", "relax=8"],
                    scheduler=cluster.scheduler_address, say=lambda m: None)
    (exp,) = cal.experiments
    assert exp.seeds == [600, 601] and not exp.errors and exp.claims > 0
    assert (tmp_path / "C/seed-601/degeneration/results.json").exists()


def test_cli_sweep_killed_and_rerun_finishes_without_recomputing(tmp_path):
    args = ["sweep", "gibbs", "--grid", "sigma=2.8,3.2", "--seeds", "0-2", "--workers", "2", *GIBBS, "--out", "D"]
    proc = subprocess.Popen([*EXE, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # the CLI, its cluster and workers: one process group
    cells = tmp_path / "D/cells"
    t0 = time.time()
    while len(list(cells.glob("*/seed-*/gibbs/results.json"))) < 2 and time.time() - t0 < 300:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in cells.glob("*/seed-*/gibbs/results.json")}
    assert 2 <= len(finished) < 6 and not (tmp_path / "D/sweep.parquet").exists()
    out = subprocess.run([*EXE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"{len(finished)} finished earlier" in out.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not recomputed
    t = pd.read_parquet(tmp_path / "D/sweep.parquet")
    assert t.groupby(["sigma", "seed"]).ngroups == 6
    assert json.loads((tmp_path / "D/sweep.json").read_text())["status"] == "done"
    other = subprocess.run([*EXE, "sweep", "gibbs", "--grid", "sigma=2.8", "--seeds", "0-2", *GIBBS, "--out", "D"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "other grid" in other.stderr and "Traceback" not in other.stderr
    bad = subprocess.run([*EXE, "sweep", "gibbs", "--grid", "sigma=2.8", "--seeds", "2-1", "--out", "E"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "seeds" in bad.stderr and "Traceback" not in bad.stderr
