"""FlexHBTuner on a tiny Lightning recipe: trials resume from checkpoints, the study file
resumes, best.yaml is a runnable recipe, bad configs fail clearly."""

import json

import pytest
import torch
import yaml

from lightning_des.cli import main
from lightning_des.tuner.lightning import FlexHBTuner

RECIPE = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
    "model": {"class_path": "lightning_des.models.recsys.FactorizationMachine", "init_args": {"embedding_dim": 4}},
    "data": {"class_path": "lightning_des.data.SyntheticCTRDataModule",
             "init_args": {"num_rows": 600, "num_dense": 2, "num_sparse": 3, "cardinality": 30, "batch_size": 100}},
}
SPACE = {"model.init_args.sparse_lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
         "model.init_args.embedding_dim": {"type": "categorical", "choices": [2, 4]}}


@pytest.fixture
def recipe(tmp_path):
    p = tmp_path / "fm_synthetic.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


@pytest.mark.parametrize("workers", [1, 2])
def test_tuner_resumes_trials_and_writes_a_runnable_best_recipe(recipe, tmp_path, workers):
    out = tmp_path / f"tune{workers}"
    tuner = FlexHBTuner(str(recipe), SPACE, metric="val_logloss", min_budget=1, max_budget=3, eta=3, method="flexhb",
                        total_budget=2.5, n_workers=workers, output_dir=str(out), seed=0)
    res = tuner.run()
    t = tuner.tuner
    assert t.budget_used <= 2.5 * 3 + 3 and res["best"] is not None
    promoted = [tr for tr in t.trials if tr.budget == 3.0 and tr.loss_at(1.0) is not None]
    assert promoted  # trained to 1 epoch, paused, resumed to 3
    tr = promoted[0]
    assert sorted(tr.measurements) == [1.0, 2.0, 3.0]  # fine-grained: every epoch
    ckpt = torch.load(out / "trials" / str(tr.id) / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 * 5  # 3 epochs of 5 batches in all: no epoch trained twice
    best = yaml.safe_load((out / "best.yaml").read_text())
    for k, v in res["best"]["config"].items():
        node = best
        for part in k.split("."):
            node = node[part]
        assert node == v
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["trials"]) == len(t.trials) and saved["best"]["val_logloss"] == pytest.approx(res["best"]["val_logloss"])
    if workers == 1:  # the interrupted-study path: a new tuner on the same directory continues
        more = FlexHBTuner(str(recipe), SPACE, min_budget=1, max_budget=3, eta=3, total_budget=4, output_dir=str(out), seed=0)
        assert more.tuner.budget_used == t.budget_used and len(more.tuner.trials) == len(t.trials)
        more.run()
        assert more.tuner.budget_used > t.budget_used
        assert main(["fit", "--config", str(out / "best.yaml"), "--trainer.max_epochs", "1", "--trainer.logger", "false",
                     "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "fit")]) == 0


def test_tune_command_errors(recipe, tmp_path, capsys):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": recipe.name, "space": SPACE, "total_budget": 1, "max_budget": 3}))
    with pytest.raises(SystemExit):
        main(["tune", "--config", str(cfg), "--n_wrokers", "2"])
    assert "n_wrokers" in capsys.readouterr().err
    assert main(["tune", "--config", str(cfg), "--recipe", "missing.yaml"]) == 1
    assert "missing.yaml' not found" in capsys.readouterr().err
    bad = dict(SPACE, **{"model.init_args.dense_lr": {"type": "float", "low": 0.1}})
    cfg.write_text(yaml.safe_dump({"recipe": recipe.name, "space": bad}))
    assert main(["tune", "--config", str(cfg)]) == 1
    assert "parameter 'model.init_args.dense_lr'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tune_deepfm_adult", "tune_deepfm_movielens"])
def test_tune_recipes_build_a_tuner(name, tmp_path):
    """The shipped tune configs parse and name an existing model recipe and a valid space."""
    from tests.test_cli import ROOT

    cfg = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    cfg.update(recipe=str(ROOT / "recipes" / cfg["recipe"]), output_dir=str(tmp_path))
    tuner = FlexHBTuner(**cfg)
    assert tuner.tuner.s_max == 2 and tuner.n_workers == cfg["n_workers"] and set(tuner.space.params) == set(cfg["space"])


def test_submitit_executor_runs_trials_as_jobs(recipe, tmp_path):
    """executor=submitit (its local cluster here; SLURM on a cluster): every job is a submitit
    job with its own logs, trials still resume from their checkpoints."""
    out = tmp_path / "tune_submitit"
    tuner = FlexHBTuner(str(recipe), SPACE, min_budget=1, max_budget=3, eta=3, method="hyperband", total_budget=1.7,
                        n_workers=1, output_dir=str(out), seed=0, executor="submitit",
                        executor_options={"cluster": "local", "timeout_min": 10})
    res = tuner.run()
    assert res["best"] is not None and tuner.tuner.budget_used >= 1.7 * 3
    jobs = list((out / "submitit").glob("*_result.pkl"))
    assert len(jobs) == len(tuner.tuner.log)  # one submitit job per tuner job
    assert any(tr.budget == 3.0 and tr.loss_at(1.0) is not None for tr in tuner.tuner.trials)
    with pytest.raises(ValueError, match="executor must be"):
        FlexHBTuner(str(recipe), SPACE, executor="ray", output_dir=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="executor_options are for"):
        FlexHBTuner(str(recipe), SPACE, executor_options={"cluster": "local"}, output_dir=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="needs executor_options.timeout_min"):
        FlexHBTuner(str(recipe), SPACE, executor="submitit", executor_options={"cluster": "local"}, output_dir=str(tmp_path / "x"))


@pytest.mark.slow
def test_des_trials_run_on_two_processes_and_resume(tmp_path, monkeypatch):
    """A trial whose recipe trains with DES on 2 gloo processes: each job is a subprocess that
    Lightning's launcher fans out; the paused trial resumes from its sharded checkpoint."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    des = dict(RECIPE, trainer={"accelerator": "cpu", "devices": 2, "max_epochs": 1,
                                "strategy": {"class_path": "lightning_des.DESStrategy", "init_args": {"mode": "des"}}})
    p = tmp_path / "fm_des.yaml"
    p.write_text(yaml.safe_dump(des))
    out = tmp_path / "tune_des"
    tuner = FlexHBTuner(str(p), SPACE, min_budget=1, max_budget=2, eta=2, method="hyperband", total_budget=1.5,
                        n_workers=1, output_dir=str(out), seed=0)
    res = tuner.run()
    resumed = [tr for tr in tuner.tuner.trials if tr.budget == 2.0 and tr.loss_at(1.0) is not None]
    assert res["best"] is not None and resumed
    assert sorted(resumed[0].measurements) == [1.0, 2.0]
    assert (out / "trials" / str(resumed[0].id) / "last.ckpt").is_dir()  # DES: one file per rank


def test_an_existing_study_continues_only_with_its_settings(recipe, tmp_path):
    out = str(tmp_path / "study")
    kw = dict(min_budget=1, max_budget=3, eta=3, output_dir=out, seed=0)
    FlexHBTuner(str(recipe), SPACE, method="hyperband", **kw)
    FlexHBTuner(str(recipe), SPACE, method="hyperband", total_budget=99, n_workers=2, **kw)  # may grow, more workers
    with pytest.raises(ValueError, match="other settings \\(method: 'hyperband' there, 'flexhb' now\\)"):
        FlexHBTuner(str(recipe), SPACE, method="flexhb", **kw)
    with pytest.raises(ValueError, match="max_budget: 3.0 there, 9.0 now"):
        FlexHBTuner(str(recipe), SPACE, method="hyperband", **{**kw, "max_budget": 9})
    saved = json.loads((tmp_path / "study" / "settings.json").read_text())
    saved["switches"]["resume_paused"] = True  # a version whose defaults differed resolved them so
    (tmp_path / "study" / "settings.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="switches.resume_paused: True there, False now"):
        FlexHBTuner(str(recipe), SPACE, method="hyperband", **kw)
    saved["switches"]["resume_paused"] = False
    (tmp_path / "study" / "settings.json").write_text(json.dumps(saved))
    recipe.write_text(recipe.read_text() + "\n# edited\n")
    with pytest.raises(ValueError, match="recipe_sha256"):
        FlexHBTuner(str(recipe), SPACE, method="hyperband", **kw)
    with pytest.raises(FileExistsError, match="resume=True .* or overwrite=True"):
        FlexHBTuner(str(recipe), SPACE, method="hyperband", resume=False, **kw)
    fresh = FlexHBTuner(str(recipe), SPACE, method="flexhb", overwrite=True, **kw)
    assert fresh.tuner.budget_used == 0 and json.loads((tmp_path / "study" / "settings.json").read_text())["method"] == "flexhb"
    with pytest.raises(ValueError, match="max_budget=2.5 is not a whole number of epochs"):
        FlexHBTuner(str(recipe), SPACE, min_budget=1, max_budget=2.5, output_dir=str(tmp_path / "y"))


def test_failing_trials_are_recorded_and_the_study_goes_on(recipe, tmp_path):
    space = {"model.init_args.sparse_lr": SPACE["model.init_args.sparse_lr"],
             "model.init_args.sparse_optimizer": {"type": "categorical", "choices": ["adagrad", "nope"]}}
    out = tmp_path / "failing"
    tuner = FlexHBTuner(str(recipe), space, min_budget=1, max_budget=1, method="random", total_budget=6,
                        output_dir=str(out), seed=0)
    res = tuner.run()
    bad = [tr for tr in tuner.tuner.trials if tr.config["model.init_args.sparse_optimizer"] == "nope"]
    good = [tr for tr in tuner.tuner.trials if tr.config["model.init_args.sparse_optimizer"] == "adagrad"]
    assert bad and good and len(tuner.tuner.trials) == 6
    assert {f["id"] for f in res["failed"]} == {tr.id for tr in bad}
    assert all("nope" in f["error"] for f in res["failed"])
    assert res["best"]["config"]["model.init_args.sparse_optimizer"] == "adagrad"
    assert "failed trial(s)" in tuner.table()
    with pytest.raises(RuntimeError, match="trials failed \\(max_failed_trials=0\\)"):
        FlexHBTuner(str(recipe), space, min_budget=1, max_budget=1, method="random", total_budget=6,
                    output_dir=str(tmp_path / "strict"), seed=0, max_failed_trials=0).run()
