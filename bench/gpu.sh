#!/usr/bin/env bash
# GPU benchmark, run on the (offline) GPU machine from the repo root, with .devcarry/ carried
# (python bench/prepare_carry.py pack, here). Figures and the log go to $OUT.
#   bash bench/gpu.sh                      # full size: 25,000 train / 25,000 test, max length 512
# Dry run on a CPU with a tiny model (every step, minutes):
#   OUT=/tmp/gpu-dry DEVICE=cpu MODEL=DIR TRAIN_SIZE=64 TEST_SIZE=32 MAX_LENGTH=64 bash bench/gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

OUT=${OUT:-/tmp/gpu-out}
CARRY=${CARRY:-.devcarry}
MODEL=${MODEL:-/tmp/carry/minilm}
DATA=${DATA:-$CARRY/imdb}
MAX_LENGTH=${MAX_LENGTH:-512}
SIZES=()
[[ -n "${TRAIN_SIZE:-}" ]] && SIZES+=(--train-size "$TRAIN_SIZE")
[[ -n "${TEST_SIZE:-}" ]] && SIZES+=(--test-size "$TEST_SIZE")
[[ -n "${DEVICE:-}" ]] && SIZES+=(--device "$DEVICE")
# Seconds per step (680 in all at most); on an H200 the whole script took 9 minutes.
T_PEER=${T_PEER:-360} T_OURS=${T_OURS:-60} T_OURS3=${T_OURS3:-80} T_COMPILE=${T_COMPILE:-120}
PEER_EPOCHS=${PEER_EPOCHS:-3}

mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1

step() {  # step NAME SECONDS COMMAND...: one guarded step; a failure does not stop the others
  local name=$1 limit=$2
  shift 2
  echo "=== $name: start $(date +%T), limit ${limit}s: $*"
  timeout --kill-after=15 "$limit" "$@"
  local rc=$?
  echo "=== $name: rc=$rc at $(date +%T)"
  return 0
}

if compgen -G "$CARRY/whl/*.whl" >/dev/null; then
  step wheels 60 python -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available())"
if [[ ! -e "$MODEL/config.json" && -e "$CARRY/manifest.json" ]]; then
  step unpack 60 python bench/prepare_carry.py unpack "$(dirname "$MODEL")" --carry "$CARRY"
fi

BENCH=(python -m bench train --model "$MODEL" --data "$DATA" --max-length "$MAX_LENGTH"
       "${SIZES[@]}" --results-dir "$OUT")
# 1. The peer alone (plain Trainer, pad to max length, fp32, PEER_EPOCHS epochs); its figures
# are saved, and every step below is measured against them.
step peer "$T_PEER" "${BENCH[@]}" --only peer --epochs "$PEER_EPOCHS"
PEER=$(ls "$OUT"/train-peer-*.json 2>/dev/null | head -n 1)
if [[ -n "$PEER" ]]; then
  OURS=("${BENCH[@]}" --only ours --peer-json "$PEER")
else
  echo "=== no peer figures; each step below runs the peer again"
  OURS=("${BENCH[@]}" --peer-epochs "$PEER_EPOCHS")
fi
# 2. Ours, as many epochs as the peer (accuracy after the same number of epochs); 3. ours,
# 1 epoch; 4. ours, 1 epoch, half the token budget per step (twice the steps: accuracy against
# throughput, for trainer/transformer/loop.py's CUDA_MIN_TOKENS); 5. ours, 1 epoch, torch.compile
# (trainer/transformer/loop.py's COMPILE_ON_CUDA follows 5 vs 3).
step ours-${PEER_EPOCHS}ep "$T_OURS3" "${OURS[@]}" --epochs "$PEER_EPOCHS" --compile off \
  --tag "${PEER_EPOCHS}ep"
step ours-1ep "$T_OURS" "${OURS[@]}" --epochs 1 --compile off --tag 1ep
step ours-1ep-16k "$T_OURS" "${OURS[@]}" --epochs 1 --compile off --tokens-per-batch 16384 \
  --tag 1ep-16k
step ours-1ep-compile "$T_COMPILE" "${OURS[@]}" --epochs 1 --compile on --tag 1ep-compile

# 6. Placeholder for the lead: a full-data `python -m trainer run` (needs the wheels above).
# step trainer-run 420 python -m trainer run --model "$MODEL" --data "$DATA" \
#   --db "sqlite:///$OUT/run.db" --trials 3 --artifacts /tmp/artifacts

echo "=== figures (name: ours vs peer, ratio; ratio > 1 means ours is better)"
for f in "$OUT"/train-*.jsonl; do
  [[ -e "$f" ]] || continue
  echo "--- $(basename "$f")"
  python -c 'import json, sys
for line in open(sys.argv[1]):
    f = json.loads(line)
    print("{}: {} vs {} {}, ratio {}".format(f["name"], f["ours"], f["peer"], f["unit"], f["ratio"]))
' "$f"
done
