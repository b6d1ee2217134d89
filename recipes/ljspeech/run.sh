#!/usr/bin/env bash
# LJ Speech single-speaker recipe: the Flow2GAN pipeline on one reader (24 h, 13,100 utterances).
#   0 data: with internet, lhotse's own LJ Speech downloader and manifest recipe; offline, --wav-dir DIR
#     (any folder of LJ Speech wavs, e.g. ../shared/data/ljspeech-32). The last $n_heldout utterances
#     (sorted ids) are held out: never trained on, vocoded and scored in stages 5-6.
#   1 flow-matching pre-training, 2 averaging, 3 GAN fine-tuning of the $n_timesteps-step generator,
#   4 export, 5 vocode the held-out files, 6 metrics (PESQ, STOI, V/UV F1, periodicity, pitch RMSE).
# Settings (override as --name value or from the environment):
#   1 GPU:  device=cuda batch_size=64 duration=1.5 model_name=mel_24k_base gan_name=gan_multi_scale_mel_recon
#           pretrain_epochs=100 finetune_epochs=10 finetune_lr=0.002 finetune_lr_batches=20000
#           gen_start=1000 n_timesteps=2 mel_only=0 phase_loss=0 stft_loss=0 periodicity_loss=0 (the
#           paper's stage-1 settings are batch 256 x 2 GPUs).
#   CPU (default here): mel_24k_small_envelope (mel-envelope preconditioning), narrow discriminators,
#           batch 8 x 0.5 s, short LR warm-up, 4-step stage 2 at generator LR 0.02 trained without
#           discriminators (mel_only; set it below the stage's batch count to end with the GAN phase) on
#           the mel loss plus the STFT phase-derivative loss (phase_loss, weighted by magnitude: phase_power)
#           and the autocorrelation periodicity loss (periodicity_loss): the settings
#           benchmarks/learning.py measured best for a CPU budget (benchmarks/README.md).
# Usage: bash recipes/ljspeech/run.sh [--wav-dir DIR] [--stage 0] [--stop-stage 6] [--out exp/ljspeech]
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=${stage:-0}
stop_stage=${stop_stage:-6}
out=${out:-exp/ljspeech}
python=${python:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
wav_dir=${wav_dir:-}                      # offline: a folder of LJ Speech wavs instead of the download
download_dir=${download_dir:-download}    # where lhotse puts LJSpeech-1.1/
n_heldout=${n_heldout:-100}               # last utterances held out (use ~6 with the 32-file subset)
device=${device:-cpu}
model_name=${model_name:-mel_24k_small_envelope}
gan_name=${gan_name:-gan_small_multi_scale_mel_recon}
batch_size=${batch_size:-8}
duration=${duration:-0.5}
num_workers=${num_workers:-2}
pretrain_epochs=${pretrain_epochs:-20}
pretrain_avg=${pretrain_avg:-5}
pretrain_lr=${pretrain_lr:-0.035}
warmup_batches=${warmup_batches:-100}     # the paper's 500 is most of a short run
finetune_epochs=${finetune_epochs:-4}
finetune_avg=${finetune_avg:-2}
n_timesteps=${n_timesteps:-4}
gen_start=${gen_start:-0}                 # discriminator-only batches before G/D alternation (paper: 1000)
finetune_lr=${finetune_lr:-0.02}          # stage-2 generator LR (paper: 0.002 after 139 k stage-1 steps)
finetune_lr_batches=${finetune_lr_batches:-5000}  # its Eden2 decay length (paper: 20000)
mel_only=${mel_only:-1000000}             # stage-2 batches without discriminators before the GAN phase (paper: 0)
phase_loss=${phase_loss:-90}              # weight of the stage-2 phase-derivative loss (paper: 0)
phase_power=${phase_power:-0.5}           # its weight |X[k] X[k-1]|^phase_power: 0.5 = by magnitude (1 = by power)
phase_max_freq=${phase_max_freq:-2000}    # highest frequency (Hz) it compares (0 = all bins)
stft_loss=${stft_loss:-0}                 # weight of the stage-2 linear-STFT magnitude loss (paper: 0)
periodicity_loss=${periodicity_loss:-100} # weight of the stage-2 autocorrelation periodicity loss (paper: 0)
periodicity_peak=${periodicity_peak:-1} # its extra weight at the pitch period (0: the mean over lags alone)

. recipes/parse_options.sh

data=$out/data
pre=$out/exp-pretrain
ft=$out/exp-finetune-step-$n_timesteps
common=(--model-name "$model_name" --batch-size "$batch_size" --duration "$duration" --device "$device"
        --train-num-workers "$num_workers" --valid-num-workers 1 --warmup-batches "$warmup_batches"
        --train-recordings "$data/train.jsonl.gz" --valid-recordings "$data/valid.jsonl.gz")
log() { echo "$(date '+%H:%M:%S') [ljspeech] $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  mkdir -p "$data"
  if [ -n "$wav_dir" ]; then
    log "stage 0: manifests from $wav_dir"
    $python -m flow2gan.bin.prepare_manifests --wav-dir "$wav_dir" --out "$data/all.jsonl.gz"
  else
    log "stage 0: LJ Speech via lhotse (download to $download_dir)"
    $python - "$download_dir" "$data" <<'PY'
import sys
from lhotse.recipes import download_ljspeech, prepare_ljspeech
corpus = download_ljspeech(sys.argv[1])
prepare_ljspeech(corpus, sys.argv[2])["recordings"].to_file(f"{sys.argv[2]}/all.jsonl.gz")
PY
  fi
  $python - "$data" "$n_heldout" "$model_name" <<'PY'
import sys
from pathlib import Path
from lhotse import RecordingSet
from flow2gan import get_generator_config
from flow2gan.audio import load_audio, save_audio
data, n = Path(sys.argv[1]), int(sys.argv[2])
sampling_rate = get_generator_config(sys.argv[3]).sampling_rate
recs = sorted(RecordingSet.from_file(data / "all.jsonl.gz"), key=lambda r: r.id)
if len(recs) <= n:
    raise SystemExit(f"{len(recs)} recordings, cannot hold out {n}")
train, held = recs[:-n], recs[-n:]
RecordingSet.from_recordings(train).to_file(data / "train.jsonl.gz")
RecordingSet.from_recordings(train[:8]).to_file(data / "valid.jsonl.gz")
wavs = data / "heldout_wav"
wavs.mkdir(exist_ok=True)
for rec in held:  # references at the model's rate: evaluate compares files of the same rate
    audio = load_audio(rec.sources[0].source, sampling_rate)
    save_audio(wavs / f"{rec.id}.wav", audio, sampling_rate)
print(f"{len(train)} training recordings, {len(held)} held out in {wavs}")
PY
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: flow-matching pre-training ($pretrain_epochs epochs)"
  $python -m flow2gan.bin.pretrain "${common[@]}" --exp-dir "$pre" --num-epochs "$pretrain_epochs" \
    --base-lr "$pretrain_lr" --save-every-n 1 --average-period 20 --log-interval 50 --valid-interval 1000
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: averaging epochs $((pretrain_epochs - pretrain_avg + 1))..$pretrain_epochs"
  $python -m flow2gan.bin.save_averaged_model --exp-dir "$pre" --epoch "$pretrain_epochs" --avg "$pretrain_avg" \
    --model-name "$model_name"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: GAN fine-tuning of the $n_timesteps-step generator ($finetune_epochs epochs)"
  $python -m flow2gan.bin.finetune "${common[@]}" --exp-dir "$ft" --num-epochs "$finetune_epochs" \
    --generator-model-path "$pre/epoch-$pretrain_epochs-avg-$pretrain_avg-use-avg-model.pt" \
    --gan-name "$gan_name" --n-timesteps "$n_timesteps" --gen-start-batch-idx "$gen_start" \
    --base-lr-gen "$finetune_lr" --lr-batches-gen "$finetune_lr_batches" --mel-only-batches "$mel_only" \
    --phase-loss-scale "$phase_loss" --phase-loss-weight-power "$phase_power" \
    --phase-loss-max-freq "$phase_max_freq" --stft-loss-scale "$stft_loss" \
    --periodicity-loss-scale "$periodicity_loss" --periodicity-peak-weight "$periodicity_peak" \
    --save-every-n 1 --average-period 10 --log-interval 50 --valid-interval 1000
fi

ft_ckpt=$ft/epoch-$finetune_epochs-avg-$finetune_avg-use-avg-model-only-gen.pt
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: export the fine-tuned generator -> $ft_ckpt"
  $python -m flow2gan.bin.save_averaged_model --exp-dir "$ft" --epoch "$finetune_epochs" --avg "$finetune_avg" \
    --model-name "$model_name" --gan-name "$gan_name" --load-gan true
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: vocoding the held-out files"
  $python -m flow2gan.bin.infer_dir --checkpoint "$ft_ckpt" --model-name "$model_name" \
    --n-timesteps "$n_timesteps" --input-dir "$data/heldout_wav" --output-dir "$out/pred" --overwrite yes
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: metrics of the held-out files -> $out/pred/metrics_summary.json"
  $python -m flow2gan.bin.evaluate --gt-wav-dir "$data/heldout_wav" --pred-wav-dir "$out/pred"
fi
log "done"
