#!/bin/bash
# de-en baseline recipe + tied embeddings, 2 epochs, seed 0: vocabulary 4,000 (recipe) vs 8,000, greedy val BLEU every epoch
# Usage: bash benchmarks/nmt_vocab_check.sh  (rows summarised in benchmarks/results/nmt_de_en_vocab_tie_e2.json; ~20-25 min on 2 cores)
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
fit() { # name, extra args
  d=lightning_logs/vocab_check/$1; rm -rf $d; mkdir -p $d; shift
  /usr/bin/time -f "%e s" .venv/bin/lightning-des fit --config recipes/nmt_bahdanau_de_en.yaml --model.init_args.val_bleu true --model.init_args.tie_embeddings true "$@" \
    --trainer.max_epochs 2 --trainer.default_root_dir $d --trainer.enable_progress_bar false \
    --trainer.logger lightning.pytorch.loggers.CSVLogger --trainer.logger.save_dir $d \
    --trainer.callbacks.output_file $d/predictions.txt > $d/fit.log 2>&1
  echo "$d fit rc=$?"; tail -1 $d/fit.log
}
fit tie_v4000 &
fit tie_v8000 --data.init_args.vocab_size 8000 &
wait
for v in 4000 8000; do
  d=lightning_logs/vocab_check/tie_v$v
  ck=$(ls $d/lightning_logs/version_0/checkpoints/epoch=*.ckpt | head -1)
  .venv/bin/lightning-des test --config recipes/nmt_bahdanau_de_en.yaml --data.init_args.vocab_size $v --ckpt_path $ck \
    --trainer.enable_progress_bar false --trainer.logger false --trainer.default_root_dir $d --trainer.callbacks.output_file $d/test_predictions.txt > $d/test.log 2>&1 &
done
wait
# summary: validation (greedy val_bleu, val_loss per epoch) and test metrics of both runs
.venv/bin/python - <<'PY'
import csv, json, re
out = {"command": "bash benchmarks/nmt_vocab_check.sh", "runs": []}
for v in (4000, 8000):
    d = f"lightning_logs/vocab_check/tie_v{v}"
    val = [r for r in csv.DictReader(open(f"{d}/lightning_logs/version_0/metrics.csv")) if r.get("val_bleu")]
    # overall metrics only: the printed table wraps long per-domain names, so those are not parsed
    test = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(test_[a-z0-9]+)\s+([0-9.]+)\s*$", open(f"{d}/test.log").read(), re.M)}
    missing = {"test_bleu", "test_chrf", "test_repetition", "test_repetition2", "test_dropping"} - set(test)
    if missing:
        raise SystemExit(f"{d}/test.log: no {sorted(missing)} in the test table")
    fit_s = float(open(f"{d}/fit.log").read().strip().splitlines()[-1].split()[0])
    out["runs"].append({"vocab_size": v, "tie_embeddings": True, "fit_s_shared_cpu": fit_s,
                        "val": [{"epoch": int(r["epoch"]), "val_bleu_greedy": float(r["val_bleu"]), "val_loss": float(r["val_loss"])} for r in val], **test})
json.dump(out, open("benchmarks/results/nmt_de_en_vocab_tie_e2.json", "w"), indent=1)
for r in out["runs"]:
    print(r["vocab_size"], r["val"][-1], r["test_bleu"])
PY
