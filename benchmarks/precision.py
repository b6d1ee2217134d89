"""Quality impact of bf16 autocast against fp32 inference, on the project's test_data.

For every ``test_data/wav`` file: vocode its log-mel with the same start noise in fp32 and under
``torch.autocast(dtype=bfloat16)``, then report max |Δ| between the two waveforms, wideband PESQ of the
bf16 output against the fp32 output, and the PESQ of each against the original recording.

    python benchmarks/precision.py --model-name mel_24k_small --n-timesteps 2 \
        --checkpoint exp/mini/exp-finetune-step-2/epoch-12-avg-4-use-avg-model-only-gen.pt

bf16 has no hardware support on AVX2 CPUs (hundreds of times slower than fp32 there): use a small model
on CPU, or ``--device cuda``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flow2gan import get_model
from flow2gan.audio import load_audio
from flow2gan.eval.metrics import pesq_wb, to_16k_padded
from flow2gan.features import mel_frontend
from flow2gan.models.generator import MelAudioGenerator

REPO = Path(__file__).resolve().parent.parent


def pesq(ref, pred, sr: int) -> float:  # (T,) numpy signals at sr
    """Wideband PESQ at 16 kHz with the evaluation tool's resampling and padding."""
    return pesq_wb(*to_16k_padded(ref, pred, sr))


def fp32_and_bf16(
    model: MelAudioGenerator, mel: torch.Tensor, noise: torch.Tensor, n_timesteps: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 and bf16-autocast outputs (B, T) (bf16 cast back to fp32) of the same mel and start noise."""
    with torch.inference_mode():
        fp32 = model.infer(mel, n_timesteps=n_timesteps, noise=noise, clamp_pred=True)
        with torch.autocast(mel.device.type, dtype=torch.bfloat16):
            bf16 = model.infer(mel, n_timesteps=n_timesteps, noise=noise, clamp_pred=True).float()
    return fp32, bf16


def main() -> None:
    """Print a per-file table and the means."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model-name", default="mel_24k_base")
    parser.add_argument("--n-timesteps", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--wav-dir", type=Path, default=REPO / "test_data" / "wav")
    args = parser.parse_args()
    model, cfg = get_model(args.model_name, checkpoint=args.checkpoint, device=args.device)
    mel_fn = mel_frontend(model.config).to(args.device)
    rows = []
    for path in sorted(args.wav_dir.glob("*.wav")):
        audio = load_audio(path, cfg.sampling_rate).to(args.device)
        mel = mel_fn(audio[None])
        noise = 0.1 * torch.randn(
            1, mel.shape[-1] * cfg.mel_hop_length, generator=torch.Generator().manual_seed(0)
        )
        noise = noise.to(args.device)
        fp32, bf16 = (out[0] for out in fp32_and_bf16(model, mel, noise, args.n_timesteps))
        n = audio.numel()
        fp32, bf16, ref = fp32[:n].cpu().numpy(), bf16[:n].cpu().numpy(), audio.cpu().numpy()
        sr = cfg.sampling_rate
        rows.append(
            (
                path.name,
                float(abs(fp32 - bf16).max()),
                pesq(fp32, bf16, sr),
                pesq(ref, fp32, sr),
                pesq(ref, bf16, sr),
            )
        )
    print("| file | max abs diff | PESQ bf16 vs fp32 | PESQ fp32 vs gt | PESQ bf16 vs gt |")
    print("| --- | --- | --- | --- | --- |")
    for name, *values in rows:
        print(f"| {name} | {values[0]:.4f} | {values[1]:.3f} | {values[2]:.3f} | {values[3]:.3f} |")
    means = [sum(r[i] for r in rows) / len(rows) for i in range(1, 5)]
    print(f"| mean | {means[0]:.4f} | {means[1]:.3f} | {means[2]:.3f} | {means[3]:.3f} |")


if __name__ == "__main__":
    main()
