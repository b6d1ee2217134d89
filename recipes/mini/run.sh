#!/usr/bin/env bash
# Mini recipe: the whole Flow2GAN pipeline on a laptop CPU in ~15 minutes. It shows the method learning
# end to end:
#   0 data + untrained baseline, 1 flow-matching pre-training, 2 averaging, 3 GAN fine-tuning (N steps),
#   4 export, 5 vocode the held-out utterances (and all of test_data/ with the final model),
#   6 score the held-out utterances (PESQ/STOI) and print a table.
# Training speech (stage 0 says which it uses): the LJ Speech subset LJ001-0001..0026 of
# ../shared/data/ljspeech-32 when that folder exists (LJ001-0027/0028 are then held out), else the
# project's own test_data/wav (espeak-ng speech, 3 files; us_female_question is held out), plus more
# espeak-ng utterances when espeak-ng and sox are installed. --lj-dir DIR points at another copy.
# The model is mel_24k_small_envelope (mel-envelope preconditioning: what makes a CPU budget count,
# see benchmarks/README.md), stage 2 adds the STFT phase-derivative and periodicity losses, and the
# fine-tuned generator runs 4 Euler steps.
# Every setting below can be overridden from the environment or as --name value (e.g. --stage 3).
# Usage: bash recipes/mini/run.sh [--stage 0] [--stop-stage 6] [--out exp/mini] ...
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=${stage:-0}
stop_stage=${stop_stage:-6}
out=${out:-exp/mini}
python=${python:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
model_name=${model_name:-mel_24k_small_envelope}
gan_name=${gan_name:-gan_small_multi_scale_mel_recon}
lj_dir=${lj_dir:-../shared/data/ljspeech-32}  # used when it exists
heldout=${heldout:-us_female_question}    # without LJ Speech: test_data/wav/<heldout>.wav is held out
extra_speech=${extra_speech:-auto}        # auto | yes | no: more espeak-ng utterances for training
epoch_batches=${epoch_batches:-100}       # the manifest repeats each file so an epoch has ~this many batches
batch_size=${batch_size:-8}
duration=${duration:-0.5}                 # crop seconds: 0.5 s crops learn faster per CPU-minute than 1.5 s
pretrain_epochs=${pretrain_epochs:-20}
pretrain_avg=${pretrain_avg:-5}
finetune_epochs=${finetune_epochs:-12}
finetune_avg=${finetune_avg:-3}
mel_only=${mel_only:-1000}                # stage-2 batches without discriminators before the GAN phase
phase_loss=${phase_loss:-90}              # weight of the stage-2 phase-derivative loss (paper: 0)
phase_power=${phase_power:-0.5}           # its weight |X[k] X[k-1]|^phase_power: 0.5 = by magnitude (1 = by power)
phase_max_freq=${phase_max_freq:-2000}    # highest frequency (Hz) it compares (0 = all bins)
stft_loss=${stft_loss:-0}                 # weight of the stage-2 linear-STFT magnitude loss (paper: 0)
periodicity_loss=${periodicity_loss:-100} # weight of the stage-2 autocorrelation periodicity loss (paper: 0)
periodicity_peak=${periodicity_peak:-1} # its extra weight at the pitch period (0: the mean over lags alone)
gen_start=${gen_start:-0}                 # discriminator-only batches before G/D alternation
n_timesteps=${n_timesteps:-4}
warmup_batches=${warmup_batches:-100}     # the paper's 500-batch LR warm-up is most of a mini run
pretrain_lr=${pretrain_lr:-0.035}
finetune_lr=${finetune_lr:-0.02}          # generator LR of stage 2 (the paper's 0.002 assumes 139 k stage-1 steps)
threads=${threads:-2}

. recipes/parse_options.sh

export OMP_NUM_THREADS=$threads
data=$out/data
pre=$out/exp-pretrain
ft=$out/exp-finetune-step-$n_timesteps
common=(--model-name "$model_name" --batch-size "$batch_size" --duration "$duration" --train-num-workers 1 --valid-num-workers 0
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
  if [ -f "$lj_dir/LJ001-0028.wav" ]; then
    log "training speech: LJ001-0001..0026 of $lj_dir (held out: LJ001-0027, LJ001-0028) + test_data/wav"
    for i in $(seq -w 1 26); do cp "$lj_dir/LJ001-00$i.wav" "$data/train_wav/"; done
    # held-out references at the model rate (evaluate compares files of the same rate)
    $python -c 'import sys; from flow2gan import get_generator_config; from flow2gan.audio import load_audio, save_audio
sr = get_generator_config(sys.argv[1]).sampling_rate
for src in sys.argv[3:]: save_audio(sys.argv[2] + "/" + src.rsplit("/", 1)[-1], load_audio(src, sr), sr)' \
      "$model_name" "$data/heldout_wav" "$lj_dir/LJ001-0027.wav" "$lj_dir/LJ001-0028.wav"
    cp test_data/wav/*.wav "$data/train_wav/"
  else
    log "training speech: test_data/wav (espeak-ng, held out: $heldout); no LJ Speech at $lj_dir"
    [ -f "test_data/wav/$heldout.wav" ] || { echo "no test_data/wav/$heldout.wav" >&2; exit 1; }
    for wav in test_data/wav/*.wav; do
      name=$(basename "$wav" .wav)
      if [ "$name" = "$heldout" ]; then cp "$wav" "$data/heldout_wav/"; else cp "$wav" "$data/train_wav/"; fi
    done
  fi
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
  n_files=$(ls "$data/train_wav" | wc -l)
  repeat=$(( (epoch_batches * batch_size + n_files - 1) / n_files ))
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
    --base-lr-gen "$finetune_lr" --lr-batches-gen 5000 --mel-only-batches "$mel_only" \
    --phase-loss-scale "$phase_loss" --phase-loss-weight-power "$phase_power" \
    --phase-loss-max-freq "$phase_max_freq" --stft-loss-scale "$stft_loss" \
    --periodicity-loss-scale "$periodicity_loss" --periodicity-peak-weight "$periodicity_peak" \
    --save-every-n 1 --keep-last-k $((finetune_avg + 1)) --average-period 10 --log-interval 20 --valid-interval 100
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: export the fine-tuned generator"
  $python -m flow2gan.bin.save_averaged_model --exp-dir "$ft" --epoch "$finetune_epochs" --avg "$finetune_avg"
fi

stage1_ckpt=$pre/epoch-$pretrain_epochs-avg-$pretrain_avg-use-avg-model.pt
ft_ckpt=$ft/epoch-$finetune_epochs-avg-$finetune_avg-use-avg-model-only-gen.pt
systems=("untrained|$out/untrained.pt|$n_timesteps" "stage1-${n_timesteps}step|$stage1_ckpt|$n_timesteps")
[ "$n_timesteps" = 4 ] || systems+=("stage1-4step|$stage1_ckpt|4")
systems+=("finetuned-${n_timesteps}step|$ft_ckpt|$n_timesteps")

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
