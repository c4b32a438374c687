"""kill -9 of the tuner, or of a trial's process, mid-job; the same command again finishes the
study with the history an uninterrupted study has, training no finished epoch twice."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.tuner.test_lightning_tuner import RECIPE, SPACE

ROOT = Path(__file__).resolve().parents[2]


def setup_study(tmp: Path, name: str) -> tuple[Path, Path]:
    """(tune config, batch log) of a small FlexHB study whose trials log every batch."""
    log = tmp / f"{name}.batches"
    recipe = json.loads(json.dumps(RECIPE))
    recipe["trainer"]["callbacks"] = [{"class_path": "tests.distributed.cluster_helpers.BatchLog",
                                       "init_args": {"path": str(log), "sleep": 0.25}}]
    (tmp / f"{name}_recipe.yaml").write_text(yaml.safe_dump(recipe))
    cfg = {"recipe": str(tmp / f"{name}_recipe.yaml"), "space": SPACE, "metric": "val_logloss", "min_budget": 1, "max_budget": 3,
           "eta": 3, "method": "flexhb", "total_budget": 2, "n_workers": 1, "output_dir": str(tmp / name), "seed": 0}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, log


def start(cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "lightning_des.cli", "tune", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-4000:]
    return out


def batches(log: Path) -> list[tuple[str, int, int]]:
    return [(t, int(e), int(b)) for t, e, b in (line.split() for line in log.read_text().splitlines())]


def history(out: Path) -> tuple:
    res = json.loads((out / "results.json").read_text())
    study = json.loads((out / "study.json").read_text())
    trials = [(t["id"], json.dumps(t["config"], sort_keys=True), t["budget"], sorted(t["metric"].items())) for t in res["trials"]]
    return res["budget_used"], trials, [(r["trial"], r["target"], r["budget"]) for r in study["log"]]


def wait_for(pred, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not pred():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["tuner", "trial"])
def test_killed_study_continues_to_the_uninterrupted_history(tmp_path, victim):
    ref_cfg, ref_log = setup_study(tmp_path, "ref")
    finish(start(ref_cfg))
    ref = history(tmp_path / "ref")
    ref_batches = batches(ref_log)
    assert len(set(ref_batches)) == len(ref_batches)  # nothing trained twice, uninterrupted
    promoted = {t for t, e, _ in ref_batches if e == 2}
    assert promoted  # a trial was paused at budget 1 and resumed to 3

    cfg, log = setup_study(tmp_path, "cut")
    proc = start(cfg)
    # the first trial past its second epoch: it resumed from budget 1 and has a checkpoint at 2
    wait_for(lambda: log.exists() and any(e == 2 and b >= 1 for _, e, b in batches(log)), proc)
    if victim == "tuner":
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start(cfg)  # the same command again
    else:  # the trial's worker process (the tuner's child running the job)
        worker = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True).stdout.split()
        assert len(worker) == 1, worker
        os.kill(int(worker[0]), signal.SIGKILL)
    out = finish(proc)
    assert history(tmp_path / "cut") == ref
    seen = collections.Counter(batches(log))
    twice = {(t, e) for (t, e, _), n in seen.items() if n > 1}
    cut_trial = next(t for t, e, b in batches(log) if e == 2)
    assert twice <= {(cut_trial, 2)}  # only the epoch that was cut short is trained again
    assert set(seen) == set(ref_batches)
    if victim == "trial":
        assert "its process died" in out
