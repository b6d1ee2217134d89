#!/usr/bin/env bash
# Mini recipe: the whole Flow2GAN pipeline on a laptop CPU, on the project's own test_data/ (plus more
# espeak-ng speech when espeak-ng and sox are installed). It shows the method learning end to end:
#   0 data + untrained baseline, 1 flow-matching pre-training, 2 averaging, 3 GAN fine-tuning (N steps),
#   4 export, 5 vocode the held-out utterances (and all of test_data/ with the final model),
#   6 score the held-out utterances (PESQ/STOI) and print a table.
# Every setting below can be overridden from the environment or as --name value (e.g. --stage 3).
# Usage: bash recipes/mini/run.sh [--stage 0] [--stop-stage 6] [--out exp/mini] ...
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=${stage:-0}
stop_stage=${stop_stage:-6}
out=${out:-exp/mini}
python=${python:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
model_name=${model_name:-mel_24k_small}
gan_name=${gan_name:-gan_small_multi_scale_mel_recon}
heldout=${heldout:-us_female_question}    # test_data/wav/<heldout>.wav is never trained on
extra_speech=${extra_speech:-auto}        # auto | yes | no: more espeak-ng utterances for training
repeat=${repeat:-16}                      # manifest repeats: each epoch visits every file this often
batch_size=${batch_size:-8}
pretrain_epochs=${pretrain_epochs:-80}
pretrain_avg=${pretrain_avg:-20}
finetune_epochs=${finetune_epochs:-12}
finetune_avg=${finetune_avg:-4}
gen_start=${gen_start:-20}                # discriminator-only batches before G/D alternation
n_timesteps=${n_timesteps:-2}
warmup_batches=${warmup_batches:-100}     # the paper's 500-batch LR warm-up is most of a mini run
pretrain_lr=${pretrain_lr:-0.035}
threads=${threads:-2}

. recipes/parse_options.sh

export OMP_NUM_THREADS=$threads
data=$out/data
pre=$out/exp-pretrain
ft=$out/exp-finetune-step-$n_timesteps
common=(--model-name "$model_name" --batch-size "$batch_size" --train-num-workers 1 --valid-num-workers 0
        --train-recordings "$data/train.jsonl.gz" --valid-recordings "$data/valid.jsonl.gz"
        --test-recordings "$data/test.jsonl.gz" --tensorboard true --seed 42 --warmup-batches "$warmup_batches")
log() { echo "$(date '+%H:%M:%S') [mini] $*"; }

extra_sentences=(
  "en-us+m1|The old lighthouse keeper counted every passing ship."
  "en-gb+f1|A cup of tea makes everything a little better."
  "en-us+f3|Seven silver spoons were hidden under the floorboards."
  "en-gb-scotland+m2|The train to Edinburgh leaves at half past nine."
  "en-us+m4|Numbers like forty two and seventeen are easy to say."
  "en-gb+m1|She walked quietly through the sleeping village."
  "en-us+f1|Could you please close the window before it rains?"
  "en-gb+f2|Music drifted over the water long after midnight."
)

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: data, manifests, untrained baseline"
  rm -rf "$data"; mkdir -p "$data/train_wav" "$data/heldout_wav"
  [ -f "test_data/wav/$heldout.wav" ] || { echo "no test_data/wav/$heldout.wav" >&2; exit 1; }
  for wav in test_data/wav/*.wav; do
    name=$(basename "$wav" .wav)
    if [ "$name" = "$heldout" ]; then cp "$wav" "$data/heldout_wav/"; else cp "$wav" "$data/train_wav/"; fi
  done
  if [ "$extra_speech" = yes ] || { [ "$extra_speech" = auto ] && command -v espeak-ng >/dev/null && command -v sox >/dev/null; }; then
    log "generating ${#extra_sentences[@]} extra espeak-ng utterances"
    for i in "${!extra_sentences[@]}"; do
      voice=${extra_sentences[$i]%%|*}; text=${extra_sentences[$i]#*|}
      espeak-ng -v "$voice" -s 165 -w "$data/raw_$i.wav" "$text"
      sox -D "$data/raw_$i.wav" -b 16 "$data/train_wav/extra_$i.wav" \
        silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse rate -v 24000 pad 0.1 0.1 norm -1
      rm "$data/raw_$i.wav"
    done
  fi
  $python -m flow2gan.bin.prepare_manifests --wav-dir "$data/train_wav" --out "$data/train.jsonl.gz" --repeat "$repeat"
  $python -m flow2gan.bin.prepare_manifests --wav-dir "$data/train_wav" --out "$data/valid.jsonl.gz"
  $python -m flow2gan.bin.prepare_manifests --wav-dir "$data/heldout_wav" --out "$data/test.jsonl.gz"
  $python - "$model_name" "$out/untrained.pt" <<'EOF'
import sys, torch
from flow2gan import MelAudioGenerator, get_generator_config
torch.manual_seed(0)
torch.save({"model": MelAudioGenerator(get_generator_config(sys.argv[1])).state_dict()}, sys.argv[2])
EOF
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: flow-matching pre-training ($pretrain_epochs epochs)"
  $python -m flow2gan.bin.pretrain "${common[@]}" --exp-dir "$pre" --num-epochs "$pretrain_epochs" \
    --base-lr "$pretrain_lr" --save-every-n 1 --keep-last-k $((pretrain_avg + 1)) --average-period 20 --log-interval 50 --valid-interval 200 --save-infer-steps 2,4
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: averaging epochs $((pretrain_epochs - pretrain_avg + 1))..$pretrain_epochs"
  $python -m flow2gan.bin.save_averaged_model --exp-dir "$pre" --epoch "$pretrain_epochs" --avg "$pretrain_avg"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: GAN fine-tuning of the $n_timesteps-step generator ($finetune_epochs epochs)"
  $python -m flow2gan.bin.finetune "${common[@]}" --exp-dir "$ft" --num-epochs "$finetune_epochs" \
    --generator-model-path "$pre/epoch-$pretrain_epochs-avg-$pretrain_avg-use-avg-model.pt" \
    --gan-name "$gan_name" --n-timesteps "$n_timesteps" --gen-start-batch-idx "$gen_start" \
    --save-every-n 1 --keep-last-k $((finetune_avg + 1)) --average-period 10 --log-interval 20 --valid-interval 100
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: export the fine-tuned generator"
  $python -m flow2gan.bin.save_averaged_model --exp-dir "$ft" --epoch "$finetune_epochs" --avg "$finetune_avg"
fi

stage1_ckpt=$pre/epoch-$pretrain_epochs-avg-$pretrain_avg-use-avg-model.pt
ft_ckpt=$ft/epoch-$finetune_epochs-avg-$finetune_avg-use-avg-model-only-gen.pt
systems=("untrained|$out/untrained.pt|$n_timesteps" "stage1-${n_timesteps}step|$stage1_ckpt|$n_timesteps"
         "stage1-4step|$stage1_ckpt|4" "finetuned-${n_timesteps}step|$ft_ckpt|$n_timesteps")

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: vocoding the held-out utterances"
  for system in "${systems[@]}"; do
    IFS='|' read -r name ckpt steps <<< "$system"
    $python -m flow2gan.bin.infer_dir --checkpoint "$ckpt" --model-name "$model_name" --n-timesteps "$steps" \
      --input-dir "$data/heldout_wav" --output-dir "$out/pred/$name" --overwrite yes
  done
  log "stage 5: vocoding all of test_data/ (wavs and mels) with the fine-tuned model -> $out/vocoded"
  for input in wav mel; do
    $python -m flow2gan.bin.infer_dir --checkpoint "$ft_ckpt" --model-name "$model_name" \
      --n-timesteps "$n_timesteps" --input-dir "test_data/$input" --output-dir "$out/vocoded/$input" --overwrite yes
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: PESQ / STOI on the held-out utterances"
  for system in "${systems[@]}"; do
    IFS='|' read -r name _ _ <<< "$system"
    $python -m flow2gan.bin.evaluate --gt-wav-dir "$data/heldout_wav" --pred-wav-dir "$out/pred/$name" \
      --pitch false > /dev/null
  done
  $python - "$out/pred" "${systems[@]}" <<'EOF' | tee "$out/results.md"
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
print("| system | PESQ (wb) | STOI |\n| --- | --- | --- |")
for system in sys.argv[2:]:
    name = system.split("|")[0]
    means = json.loads((root / name / "metrics_summary.json").read_text())["means"]
    print(f"| {name} | {means['pesq']:.3f} | {means['stoi']:.3f} |")
EOF
fi
log "done"
