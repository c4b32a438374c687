import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_des.cli import cli_main, main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
ADASS = [r for r in RECIPES if r.stem.startswith("adass_")]  # `lightning-des search` configs (tests/adass)
TUNE = [r for r in RECIPES if r.stem.startswith("tune_")]  # `lightning-des tune` configs (tests/tuner)
POETRY = [r for r in RECIPES if r.stem.startswith("poetry_")]  # tests/poetry (small corpus slices)
NMT = [r for r in RECIPES if r.stem.startswith("nmt_")]  # tests/nmt (a toy corpus)
SINGLE = [r for r in RECIPES if not r.stem.endswith("_des") and r not in ADASS + TUNE + POETRY + NMT]
DES = [r for r in RECIPES if r.stem.endswith("_des")]
TINY = ["--trainer.max_steps", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]


def test_every_recipe_is_tested():
    assert len(SINGLE) == 18 and len(DES) >= 1 and len(ADASS) == 2 and len(TUNE) == 2 and len(POETRY) == 4 and len(NMT) == 4


@pytest.mark.parametrize("recipe", SINGLE, ids=lambda p: p.stem)
def test_recipe_runs_through_cli(recipe, tmp_path, movielens_path, movielens1m_path):
    cli_main(["fit", "--config", str(recipe), "--trainer.default_root_dir", str(tmp_path), *TINY])


def test_validate_test_predict_subcommands(tmp_path):
    recipe = str(ROOT / "recipes" / "lr_adult.yaml")
    base = ["--config", recipe, "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.limit_predict_batches", "1", "--trainer.logger", "false"]
    cli_main(["validate", *base])
    cli = cli_main(["test", *base])
    assert "test_auc" in cli.trainer.callback_metrics
    cli = cli_main(["predict", *base])
    preds = cli.trainer.predict_loop.predictions
    assert preds and ((preds[0] >= 0) & (preds[0] <= 1)).all()


def test_unknown_key_on_command_line_names_it(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(ROOT / "recipes" / "lr_adult.yaml"), "--model.init_args.embeding_dim", "4"])
    assert "embeding_dim" in capsys.readouterr().err


def test_unknown_key_in_yaml_names_it(tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "recipes" / "deepfm_adult.yaml").read_text())
    cfg["model"]["init_args"]["hiden"] = [8]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(bad)])
    assert "hiden" in capsys.readouterr().err


def test_data_prepare_command(capsys):
    assert main(["data", "prepare", "adult"]) == 0
    assert "adult.tsv.gz" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "prepare", "imagenet"])


def run_cli(args: list[str], cwd: Path, timeout: int = 240) -> str:
    """Run ``lightning-des`` in a subprocess (Lightning's launcher starts the other ranks from
    the same command line); on failure or timeout show the end of its output."""
    cmd = [sys.executable, "-m", "lightning_des.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1"}
    env.pop("MASTER_PORT", None)  # Lightning picks a free one
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired as err:
        out = err.output.decode() if isinstance(err.output, bytes) else (err.output or "")
        pytest.fail(f"timed out after {timeout} s; output ends with:\n{out[-6000:]}")
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("recipe", DES, ids=lambda p: p.stem)
def test_des_recipe_runs_on_two_processes(recipe, tmp_path, movielens_path):
    out = run_cli(["fit", "--config", str(recipe), "--trainer.default_root_dir", str(tmp_path), *TINY], tmp_path)
    assert "plan:" in out


@pytest.mark.slow
def test_des_validate_and_predict_from_sharded_checkpoint(tmp_path, movielens_path):
    recipe = str(ROOT / "recipes" / "wdl_movielens_des.yaml")

    def run(*args):
        return run_cli([*args, "--config", recipe, "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_val_batches", "2",
                        "--trainer.limit_predict_batches", "2", "--trainer.enable_progress_bar", "false"], tmp_path)

    run("fit", "--trainer.max_steps", "3", "--trainer.limit_train_batches", "3")
    ckpt = next(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))
    out = run("validate", "--ckpt_path", str(ckpt))
    assert "Restoring states from the checkpoint" in out and "val_auc" in out
    run("predict", "--ckpt_path", str(ckpt))


def test_top_level_help_lists_every_subcommand_and_unknown_ones_fail(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict", "data", "search", "tune", "poem", "checkpoint"):
        assert f"\n  {sub} " in out
    assert main(["fitt"]) == 2
    assert "unknown subcommand 'fitt'; choose from fit, validate" in capsys.readouterr().err
    assert main([]) == 2
    for sub in ("data", "checkpoint", "poem", "search", "tune"):
        with pytest.raises(SystemExit) as err:
            main([sub, "--help"])
        assert err.value.code == 0
        assert "usage:" in capsys.readouterr().out
