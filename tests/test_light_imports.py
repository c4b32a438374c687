"""The tuner and the text models work where TorchRec/fbgemm are not installed (the GPU machine):
a child interpreter blocks their import and uses them; ``strategy="des"`` still resolves by name."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torchrec", "fbgemm_gpu"):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Block())
    import torch
    import lightning_des
    from lightning.pytorch.strategies import StrategyRegistry
    assert "des" in StrategyRegistry

    from lightning_des.tuner import FlexHB, Float, SearchSpace
    tuner = FlexHB(SearchSpace({"x": Float(0.0, 1.0)}), min_budget=1, max_budget=9, eta=3, mode="flexhb", seed=0)
    job = tuner.ask()
    tuner.tell(job, {b: (job.config["x"] - 0.3) ** 2 for b in job.points})

    from lightning_des.models.nmt import Seq2Seq
    m = Seq2Seq(src_vocab_size=20, tgt_vocab_size=20, embedding_dim=8, hidden=8, attention="kvmem")
    logits, atts = m(torch.randint(4, 20, (2, 5)), torch.randint(4, 20, (2, 6)))
    assert logits.shape[:2] == (2, 5) and torch.isfinite(logits).all()

    import lightning_des.models.poetry, lightning_des.data.poems, lightning_des.data.translation  # noqa: E401
    from lightning_des.cli import main
    assert not [k for k in sys.modules if k.split(".")[0] in ("torchrec", "fbgemm_gpu")]
    print("OK")
""")


def test_tuner_and_text_models_without_torchrec():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]


MISSING = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):  # blocks imports, not importlib.util.find_spec probes (torch's)
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == sys.argv[1]:
                f = sys._getframe(1)
                while f is not None:
                    if f.f_code.co_filename == "<frozen importlib.util>":
                        return None
                    f = f.f_back
                raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)")

    sys.meta_path.insert(0, Block())
    try:
        exec(sys.argv[2])
    except ImportError as err:
        print(err)
""")


def test_a_missing_extra_names_it():
    cases = [
        ("jieba", "from lightning_des.data.poems import segment; segment(['x'], cache=False)", "poetry"),
        ("pypinyin", "from lightning_des.models.poetry.constraints import rhyme_and_tone; rhyme_and_tone('x')", "poetry"),
        ("sklearn", "import lightning_des.tuner", "tune"),
        ("sacrebleu", "from lightning_des.models.nmt.metrics import translation_metrics; translation_metrics(['a'], ['a'])", "nmt"),
        ("sentencepiece", "from lightning_des.data.translation import SubwordTokenizer; SubwordTokenizer.train(['a b'], 8)", "nmt"),
    ]
    for blocked, code, extra in cases:
        proc = subprocess.run([sys.executable, "-c", MISSING, blocked, code], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert f"pip install 'lightning-des[{extra}]'" in proc.stdout, (blocked, proc.stdout, proc.stderr[-2000:])


def test_text_data_modules_do_their_corpus_work_on_first_use(monkeypatch, tmp_path):
    """Constructing (what LightningCLI does before linking sizes) trains no subwords and segments nothing."""
    from lightning_des.data import poems, translation

    tsv = tmp_path / "p.tsv"
    tsv.write_text("".join(f"ein satz nummer {i}\tsentence number {i}\n" for i in range(30)))
    monkeypatch.setattr(translation.SubwordTokenizer, "train", classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained"))))
    monkeypatch.setattr(poems, "segment", lambda *a, **k: (_ for _ in ()).throw(AssertionError("segmented")))
    translation.TranslationDataModule(path=str(tsv), vocab_size=40)
    poems.PoetryDataModule(max_poems=20)
    monkeypatch.undo()
    dm = translation.TranslationDataModule(path=str(tsv), vocab_size=40)
    assert dm.src_vocab_size > 4 and len(dm.train_pairs) == 24
