#!/usr/bin/env bash
# The paper's LibriTTS pipeline (SPEC §7.3). Stages:
#  -1 data preparation (lhotse manifests, wav lists)      3 GAN fine-tuning of the N-step generator
#   0 vocode valid+test with the released HF model,       4 vocode valid+test with the fine-tuned model
#     then jump to the metrics (stage 5)                  5 metrics: PESQ, STOI, ViSQOL, pitch/periodicity, FSD
#   1 flow-matching pre-training                          6 export the deployable fine-tuned generator
#   2 average the pre-trained checkpoints
# Token model (EnCodec codes -> audio): --model-name encodec_24k_base --codec facebook/encodec_24khz
# (or a local EncodecModel.save_pretrained folder); stage 4 vocodes the codes at --bandwidth kbps.
# Every setting below can be overridden from the environment (stage=1 bash run_libritts.sh) or on the
# command line (bash run_libritts.sh --stage 1 --stop-stage 3). See recipes/README.md.
set -euo pipefail
cd "$(dirname "$0")"

stage=${stage:-0}
stop_stage=${stop_stage:-0}
python=${python:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
libritts_root=${libritts_root:-download/libritts/LibriTTS}
manifest_dir=${manifest_dir:-data/manifests/libritts}
wav_list_dir=${wav_list_dir:-data/wav_list/libritts}
wav2vec2_path=${wav2vec2_path:-download/wav2vec2_base}
model_name=${model_name:-mel_24k_base}
codec=${codec:-}                                  # token models: EnCodec hub name or local folder
bandwidth=${bandwidth:-6}                         # token models: bandwidth of stage 4 (1.5, 3, 6, 12)
step=${step:-4}                                   # Euler steps of the fine-tuned generator (1, 2 or 4)
pretrain_exp=${pretrain_exp:-./output/exp-pretrain}
pretrain_epochs=${pretrain_epochs:-200}
pretrain_avg=${pretrain_avg:-40}
pretrain_batch_size=${pretrain_batch_size:-256}
pretrain_gpus=${pretrain_gpus:-2}
finetune_exp=${finetune_exp:-./output/exp-finetune-step-$step}
finetune_epochs=${finetune_epochs:-20}
finetune_avg=${finetune_avg:-4}
finetune_batch_size=${finetune_batch_size:-64}
finetune_gpus=${finetune_gpus:-1}
infer_batch_size=${infer_batch_size:-64}
metrics_n_proc=${metrics_n_proc:-20}

. recipes/parse_options.sh
codec_args=(); [ -z "$codec" ] || codec_args=(--codec "$codec")

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [run_libritts] $*"; }
needs_libritts() {
  [ -d "$libritts_root" ] && return 0
  echo "LibriTTS not found at '$libritts_root'. Download it (https://www.openslr.org/60/) and set" \
       "libritts_root=/path/to/LibriTTS (e.g. bash run_libritts.sh --libritts-root /data/LibriTTS)." >&2
  exit 1
}
metrics() {  # metrics PRED_DIR: every metric on the valid and test lists
  for list in filelist_valid.txt filelist_test.txt; do
    fsd=(); [ -d "$wav2vec2_path" ] && fsd=(--fsd-model-path "$wav2vec2_path")
    [ -d "$wav2vec2_path" ] || log "no wav2vec2-base at $wav2vec2_path: FSD skipped"
    $python -m flow2gan.bin.evaluate --gt-wav-dir "$libritts_root" --pred-wav-dir "$1" \
      --wav-list-file "$wav_list_dir/$list" --use-visqol true --n-proc "$metrics_n_proc" \
      --output-json "$1/metrics_${list%.txt}.json" "${fsd[@]}"
  done
}

if [ "$stage" -le -1 ] && [ "$stop_stage" -ge -1 ]; then
  log "stage -1: data preparation"
  needs_libritts
  $python -m flow2gan.bin.prepare_libritts --root-dir "$libritts_root" --manifest-dir "$manifest_dir" \
    --wav-list-dir "$wav_list_dir"
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: vocoding valid+test with libritts-mel-$step-step"
  needs_libritts
  hf_out=./output-libritts-mel-$step-step
  for set in valid test; do
    $python -m flow2gan.bin.infer --hf-model-name "libritts-mel-$step-step" --load-gan false \
      --n-timesteps "$step" --root-path "$libritts_root" --batch-size "$infer_batch_size" \
      --test-recordings "$manifest_dir/recordings_$set.jsonl.gz" --output-dir "$hf_out" --exp-dir "$hf_out"
  done
  log "stage 0 done: metrics of $hf_out next"
  metrics "$hf_out"
  exit 0
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: flow-matching pre-training"
  $python -m flow2gan.bin.pretrain --world-size "$pretrain_gpus" --master-port 12345 --use-fp16 false \
    --num-epochs "$pretrain_epochs" --save-every-n 20 --exp-dir "$pretrain_exp" --model-name "$model_name" \
    --batch-size "$pretrain_batch_size" --save-infer-steps 2,4,8 "${codec_args[@]}" \
    --train-recordings "$manifest_dir/recordings_train-all-shuf.jsonl.gz" \
    --valid-recordings "$manifest_dir/recordings_valid.jsonl.gz" \
    --test-recordings "$manifest_dir/recordings_test_10.jsonl.gz"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: averaging the pre-trained generator"
  $python -m flow2gan.bin.save_averaged_model --epoch "$pretrain_epochs" --avg "$pretrain_avg" \
    --exp-dir "$pretrain_exp" --model-name "$model_name"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: GAN fine-tuning of the $step-step generator"
  $python -m flow2gan.bin.finetune --world-size "$finetune_gpus" --master-port 12345 --use-fp16 false \
    --num-epochs "$finetune_epochs" --save-every-n 2 --exp-dir "$finetune_exp" --model-name "$model_name" \
    --batch-size "$finetune_batch_size" --gen-start-batch-idx 1000 --n-timesteps "$step" "${codec_args[@]}" \
    --generator-model-path "$pretrain_exp/epoch-$pretrain_epochs-avg-$pretrain_avg-use-avg-model.pt" \
    --train-recordings "$manifest_dir/recordings_train-all-shuf.jsonl.gz" \
    --valid-recordings "$manifest_dir/recordings_valid.jsonl.gz" \
    --test-recordings "$manifest_dir/recordings_test_10.jsonl.gz"
fi

ft_pred=$finetune_exp/wav-epoch-$finetune_epochs-avg-$finetune_avg-use-avg-model-pred-step-$step

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: vocoding valid+test with the fine-tuned generator"
  needs_libritts
  for set in valid test; do
    $python -m flow2gan.bin.infer --epoch "$finetune_epochs" --avg "$finetune_avg" --use-averaged-model true \
      --load-gan true --exp-dir "$finetune_exp" --model-name "$model_name" --n-timesteps "$step" \
      --root-path "$libritts_root" --batch-size "$infer_batch_size" "${codec_args[@]}" --bandwidth "$bandwidth" \
      --test-recordings "$manifest_dir/recordings_$set.jsonl.gz"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: metrics of $ft_pred"
  needs_libritts
  metrics "$ft_pred"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: export"
  $python -m flow2gan.bin.save_averaged_model --epoch "$finetune_epochs" --avg "$finetune_avg" \
    --exp-dir "$finetune_exp" --model-name "$model_name" --load-gan true
fi
log "done"
