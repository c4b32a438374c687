"""Planning-based poetry vs a no-planning generator and a character LM, on held-out Tang quatrains.

    python benchmarks/poetry.py [--poems 300] [--beam 5] [--retrain]

Trains (once; checkpoints under lightning_logs/poetry_bench/) the four recipes
``recipes/poetry_{planned,unplanned,charlm,keywords}.yaml`` through the CLI, two at a time with
one thread each, then writes quatrains for the first ``--poems`` test poems: the intent is the
held-out poem's own four line keywords, the planner turns it into a plan (extraction, then
expansion with the keyword LM if fewer than four survive), the planned generator writes from
the plan; the no-planning generator and the character LM write from nothing but the line
length (so with beam search each writes one poem per length: they are also run with top-10
sampling). All decode with the same constraints (exact length, known characters, rhyme and level
tone on lines 2 and 4, no character more than twice in a line). Metrics: BLEU-2 (sacrebleu, character tokens, line against the
original line), keyword coverage (share of plan keywords inside their line), format compliance
(length; lines 2/4 rhyme; level tone at both), distinct-2 (unique character bigrams / all,
within lines), test perplexity per token (teacher forcing; the generators and the LM score the
same 4 x (length + 1) tokens per poem). Writes benchmarks/results/poetry.json and examples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "lightning_logs" / "poetry_bench"
MODELS = ["planned", "unplanned", "charlm", "keywords"]
INTENTS = ["秋夜思乡", "春风杨柳", "明月", "边塞征人", "江南烟雨"]


def train(retrain: bool, extra: list[str]) -> dict[str, Path]:
    ckpts = {m: RUNS / m / "checkpoints" / "last.ckpt" for m in MODELS}
    todo = [m for m in MODELS if retrain or not ckpts[m].is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    RUNS.mkdir(parents=True, exist_ok=True)
    for pair in [todo[i:i + 2] for i in range(0, len(todo), 2)]:
        t0 = time.perf_counter()
        procs = {}
        for m in pair:
            with open(RUNS / f"{m}.log", "w") as log:
                procs[m] = subprocess.Popen([sys.executable, "-m", "lightning_des.cli", "fit", "--config",
                                             str(ROOT / "recipes" / f"poetry_{m}.yaml"), "--trainer.default_root_dir", str(RUNS / m),
                                             "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *extra],
                                            env=env, stdout=subprocess.DEVNULL, stderr=log)
        for m, p in procs.items():
            if p.wait() != 0:
                raise SystemExit(f"training {m} failed; see {RUNS / m}.log")
        print(f"trained {pair} in {time.perf_counter() - t0:.0f} s")
    # ModelCheckpoint(monitor=val_loss) keeps the best epoch beside last.ckpt: use the best
    return {m: next((RUNS / m / "checkpoints").glob("epoch=*.ckpt"), ckpts[m]) for m in MODELS}


def distinct2(lines: list[str]) -> float:
    grams = [x[i:i + 2] for x in lines for i in range(len(x) - 1)]
    return len(set(grams)) / max(len(grams), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--poems", type=int, default=300)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--max-poems", type=int, default=None, help="corpus slice (smoke runs)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipes' max_epochs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "poetry.json"))
    args = ap.parse_args()
    global RUNS
    if args.max_poems:
        RUNS = RUNS.with_name(f"poetry_bench_{args.max_poems}")
    extra = (["--data.init_args.max_poems", str(args.max_poems)] if args.max_poems else []) + \
        (["--trainer.max_epochs", str(args.epochs)] if args.epochs else [])
    ckpts = train(args.retrain, extra)

    import torch
    from sacrebleu.metrics import BLEU

    from lightning_des.data.poems import PoetryDataModule
    from lightning_des.models.poetry import GRULanguageModel, LineGenerator, PlanningPoetGenerator, lm_poem
    from lightning_des.models.poetry.constraints import rhyme_and_tone, rhymes

    torch.set_num_threads(1)
    poet = PlanningPoetGenerator.from_checkpoints(ckpts["planned"], ckpts["keywords"])
    unplanned = PlanningPoetGenerator(LineGenerator.load_from_checkpoint(ckpts["unplanned"], map_location="cpu"), poet.vocab, poet.planner)
    charlm = GRULanguageModel.load_from_checkpoint(ckpts["charlm"], map_location="cpu")
    data = {t: PoetryDataModule(task=t, use_keywords=u, batch_size=256, max_poems=args.max_poems) for t, u in [("lines", True), ("poems", True)]}
    nokw = PoetryDataModule(task="lines", use_keywords=False, batch_size=256, max_poems=args.max_poems)
    dm = data["lines"]
    assert dm.vocab.itos == poet.vocab.itos, "the checkpoints were trained on another split or vocabulary"
    test = dm.test_poems[: args.poems]

    ppl = {"planned": poet.generator.perplexity(dm.test_dataloader()), "unplanned": unplanned.generator.perplexity(nokw.test_dataloader()),
           "charlm": charlm.perplexity(data["poems"].test_dataloader())}
    outputs: dict[str, list[dict]] = {m: [] for m in ["planned", "planned, no rhyme/tone constraint", "unplanned", "unplanned, sampled",
                                                      "charlm", "charlm, sampled"]}
    g = torch.Generator().manual_seed(0)  # the unconditioned baselines write one poem per length with beam search: sample too
    t0 = time.perf_counter()
    for p in test:
        intent = "".join(dm.plans[p.id])
        plan = poet.planner.plan(intent)
        for name, fn in [("planned", lambda: poet.write(plan, p.n_chars, beam=args.beam).lines),
                         ("planned, no rhyme/tone constraint", lambda: poet.write(plan, p.n_chars, rhyme=False, tone=False, beam=args.beam).lines),
                         ("unplanned", lambda: unplanned.write(plan, p.n_chars, beam=args.beam, use_keywords=False).lines),
                         ("unplanned, sampled", lambda: unplanned.write(plan, p.n_chars, use_keywords=False, sample_top_k=10, generator=g).lines),
                         ("charlm", lambda: lm_poem(charlm, poet.vocab, p.n_chars, beam=args.beam)),
                         ("charlm, sampled", lambda: lm_poem(charlm, poet.vocab, p.n_chars, sample_top_k=10, generator=g))]:
            outputs[name].append({"id": p.id, "plan": plan, "gold_plan": dm.plans[p.id], "lines": fn(), "ref": list(p.lines)})
    decode_s = time.perf_counter() - t0

    bleu = BLEU(tokenize="zh", max_ngram_order=2, effective_order=True)
    rows = []
    for name, outs in outputs.items():
        hyp = [x for o in outs for x in o["lines"]]
        ref = [x for o in outs for x in o["ref"]]
        cover = [k in line for o in outs for k, line in zip(o["plan"], o["lines"])]
        length_ok = [all(len(x) == len(o["ref"][0]) for x in o["lines"]) for o in outs]
        rhyme_ok = [rhymes(o["lines"][1][-1], o["lines"][3][-1]) and o["lines"][1][-1] != o["lines"][3][-1] for o in outs]
        tone_ok = [rhyme_and_tone(o["lines"][1][-1])[1] and rhyme_and_tone(o["lines"][3][-1])[1] for o in outs]
        model = name.split(",")[0]
        rows.append({"model": name, "bleu2": bleu.corpus_score(hyp, [ref]).score, "keyword_coverage": sum(cover) / len(cover),
                     "length_ok": sum(length_ok) / len(outs), "rhyme_ok": sum(rhyme_ok) / len(outs), "tone_ok": sum(tone_ok) / len(outs),
                     "format_ok": sum(a and b and c for a, b, c in zip(length_ok, rhyme_ok, tone_ok)) / len(outs),
                     "distinct2": distinct2(hyp), "perplexity": ppl[model]})
    plan_match = sum(k in o["gold_plan"] for o in outputs["planned"] for k in o["plan"]) / (4 * len(test))
    ref_rhyme = sum(rhymes(p.lines[1][-1], p.lines[3][-1]) for p in test) / len(test)
    examples = [{"intent": i, **vars(poet.generate(i, 7, beam=args.beam))} for i in INTENTS]
    res = {"poems": len(test), "beam": args.beam, "rows": rows, "plan_keywords_from_gold": plan_match,
           "reference_rhyme_rate": ref_rhyme, "decode_s_per_poem_all_models": decode_s / len(test), "examples": examples,
           "samples": {k: v[:10] for k, v in outputs.items()}}
    Path(args.out).write_text(json.dumps(res, ensure_ascii=False, indent=1))
    print(f"{len(test)} held-out poems, beam {args.beam}; plan keywords that are the poem's own: {plan_match:.1%}; "
          f"originals whose lines 2/4 rhyme by our groups: {ref_rhyme:.1%}\n")
    print("| model | BLEU-2 | keyword coverage | format ok (length, rhyme, tone) | distinct-2 | test perplexity |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['bleu2']:.2f} | {r['keyword_coverage']:.1%} | {r['format_ok']:.1%} ({r['length_ok']:.0%}, "
              f"{r['rhyme_ok']:.0%}, {r['tone_ok']:.0%}) | {r['distinct2']:.3f} | {r['perplexity']:.1f} |")
    for e in examples:
        print(f"\nintent {e['intent']}\n" + "plan: " + " / ".join(e["plan"]) + "\n" + "\n".join(e["lines"]))


if __name__ == "__main__":
    main()
