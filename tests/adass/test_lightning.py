"""AdaS&S through Lightning: callbacks, the cached evaluator, `lightning-des search`, and the
searched sizes in a DES run."""

import json

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_des.callbacks import AdaSSearchCallback, AdaSSupernetCallback
from lightning_des.cli import main
from lightning_des.data.modules import SyntheticCTRDataModule
from lightning_des.models.recsys import DLRM, DeepFM, LogisticRegression
from lightning_des.adass import SearchOptions, SupernetEmbedding, SupernetOptions
from lightning_des.adass.evaluate import SupernetEvaluator
from lightning_des.adass.pipeline import search_parser
from tests.test_cli import ADASS, ROOT, run_cli


def _data():
    return SyntheticCTRDataModule(num_rows=1500, num_dense=2, num_sparse=4, cardinality=50, batch_size=64, seed=0)


def _trainer(tmp_path, callbacks, **kw):
    return pl.Trainer(accelerator="cpu", max_epochs=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kw)


def test_supernet_and_search_callbacks(tmp_path):
    pl.seed_everything(0)
    dm = _data()
    model = DeepFM(dm.schema, embedding_dim=8, hidden=[16])
    sup = AdaSSupernetCallback(SupernetOptions(candidates=[0, 2, 4, 8], warmup_steps=3), seed=0)
    search = AdaSSearchCallback(SearchOptions(budget=0.5, iterations=20), output=str(tmp_path / "sizes.yaml"))
    trainer = _trainer(tmp_path, [sup, search])
    trainer.fit(model, dm)
    assert isinstance(model.net.deep, SupernetEmbedding) and "val_auc" in trainer.callback_metrics
    # every training sample drew one candidate per field
    assert sup.sampler.counts.sum().item() == dm.num_rows("train") * 4 and sup.sampler.steps == trainer.global_step
    assert len(sup.probs_history) == 1
    r = search.result
    assert r.params <= r.budget == int(0.5 * 200 * 8) and set(r.sizes.values()) <= {0, 2, 4, 8}
    cfg = yaml.safe_load((tmp_path / "sizes.yaml").read_text())
    assert cfg == {"model": {"init_args": {"embedding_dims": r.sizes}}}
    assert json.loads((tmp_path / "sizes.json").read_text())["params"] == r.params
    # the searched sizes build the final model directly
    final = DeepFM(dm.schema, embedding_dim=8, hidden=[16], embedding_dims=r.sizes)
    dims = {c.feature_names[0]: c.embedding_dim for c in final.net.deep.embedding_bag_configs()}
    assert dims == {f: d for f, d in r.sizes.items() if d > 0}
    # sampler state survives a checkpoint round trip
    state = sup.state_dict()
    fresh = AdaSSupernetCallback(SupernetOptions(candidates=[0, 2, 4, 8]))
    fresh.load_state_dict(state)
    fresh.setup(trainer, model, "fit")
    assert torch.equal(fresh.sampler.counts, sup.sampler.counts) and fresh.sampler.steps == sup.sampler.steps


def test_evaluator_matches_the_model_forward():
    """The cached split-form scoring equals the plain forward of the sub-network."""
    pl.seed_everything(0)
    dm = _data()
    dm.setup()
    model = DeepFM(dm.schema, embedding_dim=8, hidden=[16], dropout=0.3)
    space_cb = AdaSSupernetCallback(SupernetOptions(candidates=[0, 2, 8]))
    space_cb.setup(_trainer(None, []), model, "fit")
    batches = list(dm.val_dataloader())
    ev = SupernetEvaluator(model.net, batches)
    model.eval()
    for choice in [(0, 1, 2, 1), (2, 2, 2, 2), (0, 0, 0, 0)]:
        model.net.deep.eval_choice = torch.tensor(choice)
        with torch.no_grad():
            ref = torch.cat([model(b.dense_features, b.sparse_features) for b in batches])
        torch.testing.assert_close(ev.logits(choice), ref, rtol=1e-5, atol=1e-5)
    assert 0.0 <= ev((2, 2, 2, 2)) <= 1.0


def test_evaluator_row_subset_scores_those_rows():
    """``max_rows`` scores the AUC of exactly the drawn rows of the full evaluation, the same
    rows for every choice; a seed draws another subset; too few rows are refused."""
    from torchmetrics.functional.classification import binary_auroc

    pl.seed_everything(0)
    dm = _data()
    dm.setup()
    model = DeepFM(dm.schema, embedding_dim=8, hidden=[16])
    AdaSSupernetCallback(SupernetOptions(candidates=[0, 2, 8])).setup(_trainer(None, []), model, "fit")
    batches = list(dm.val_dataloader())
    full = SupernetEvaluator(model.net, batches)
    sub = SupernetEvaluator(model.net, batches, max_rows=50, seed=3)
    assert sub.rows == 50 < full.rows
    keep = torch.randperm(full.rows, generator=torch.Generator().manual_seed(3))[:50].sort().values
    for choice in [(0, 1, 2, 1), (2, 2, 2, 2)]:
        torch.testing.assert_close(sub.logits(choice), full.logits(choice)[keep])
        ref = binary_auroc(torch.sigmoid(full.logits(choice)[keep]), full.labels[keep])
        assert sub(choice) == pytest.approx(float(ref))
    assert not torch.equal(SupernetEvaluator(model.net, batches, max_rows=50, seed=4).logits((2, 2, 2, 2)), sub.logits((2, 2, 2, 2)))
    assert SupernetEvaluator(model.net, batches, max_rows=10**9).rows == full.rows
    with pytest.raises(ValueError, match="max_rows must be >= 2"):
        SupernetEvaluator(model.net, batches, max_rows=1)
    with pytest.raises(ValueError, match="eval_rows must be >= 2 or None"):
        SearchOptions(eval_rows=0)


@pytest.mark.parametrize("cls", [LogisticRegression, DLRM], ids=lambda c: c.__name__)
def test_supernet_rejects_models_without_sizable_sum_over_fields(cls, tmp_path):
    dm = _data()
    model = cls(dm.schema, embedding_dim=8)
    with pytest.raises(MisconfigurationException, match="searches the embedding widths of FM, DNN, WideAndDeep or DeepFM"):
        _trainer(tmp_path, [AdaSSupernetCallback()], max_steps=1).fit(model, dm)
    with pytest.raises(ValueError, match="sampler must be 'adaptive' or 'uniform'"):
        SupernetOptions(sampler="greedy")


@pytest.mark.parametrize("recipe", ADASS, ids=lambda p: p.stem)
def test_adass_recipes_parse_and_name_a_model_recipe(recipe):
    cfg = search_parser().parse_args(["--config", str(recipe)])
    assert (ROOT / cfg.recipe).is_file() and cfg.search.budget and cfg.supernet.sampler == "adaptive"


def test_search_command_runs_supernet_search_and_retrain(tmp_path):
    out = tmp_path / "run"
    code = main(["search", "--config", str(ROOT / "recipes" / "adass_deepfm_adult.yaml"), "--output_dir", str(out),
                 "--supernet.max_epochs", "1", "--search.iterations", "5", "--search.budget", "0.5", "--progress_bar", "false"])
    assert code == 0
    res = json.loads((out / "result.json").read_text())
    assert res["params"] == res["model_embedding_params"] <= res["budget"] == int(0.5 * res["uniform_params"])
    assert 0.5 < res["test_auc"] <= 1.0 and (out / "adass_sizes.yaml").is_file()


def test_search_command_rejects_unknown_keys_and_missing_recipe(tmp_path, capsys):
    cfg = str(ROOT / "recipes" / "adass_deepfm_adult.yaml")
    with pytest.raises(SystemExit):
        main(["search", "--config", cfg, "--search.bugdet", "0.5"])
    assert "bugdet" in capsys.readouterr().err
    assert main(["search", "--config", cfg, "--recipe", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml' not found" in capsys.readouterr().err


@pytest.mark.slow
def test_searched_sizes_train_with_des(tmp_path, movielens_path):
    """The sizes file plugs into a DES recipe: the planner shards the mixed-width tables
    (a dropped field has none) and the consolidated checkpoint has the searched shapes."""
    sizes = {"user_id": 32, "item_id": 8, "gender": 0, "occupation": 4, "zip3": 2, "age_bucket": 0, "release_year": 4, "genres": 16}
    sizes_file = tmp_path / "sizes.yaml"
    sizes_file.write_text(yaml.safe_dump({"model": {"init_args": {"embedding_dims": sizes}}}))
    run_cli(["fit", "--config", str(ROOT / "recipes" / "deepfm_movielens_des.yaml"), "--config", str(sizes_file),
             "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
             "--trainer.enable_progress_bar", "false"], tmp_path)
    ckpt = next(tmp_path.glob("lightning_logs/*/checkpoints/*.ckpt"))
    assert main(["checkpoint", "consolidate", str(ckpt), str(tmp_path / "single.ckpt")]) == 0
    model = DeepFM.load_from_checkpoint(tmp_path / "single.ckpt")
    sd = model.state_dict()
    for f, d in sizes.items():
        key = f"net.deep.embedding_bags.emb_{f}.weight"
        assert (key in sd) == (d > 0) and (d == 0 or sd[key].shape[1] == d)
