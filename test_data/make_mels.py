"""Write the log-mel ``(1, n_mels, frames)`` of every test WAV as ``test_data/<mel dir>/<name>.pt``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from flow2gan.audio import load_audio, read_audio
from flow2gan.features import LogMelSpectrogram

HERE = Path(__file__).resolve().parent

# (wav dir, mel dir, sampling rate, n_fft, hop, n_mels) — the two released front-ends.
FRONT_ENDS = (
    ("wav", "mel", 24000, 1024, 256, 100),
    ("wav_44k", "mel_44k_128band_512x", 44100, 2048, 512, 128),
)


def write_mels(wav_dir: Path, mel_dir: Path, sr: int, n_fft: int, hop: int, n_mels: int) -> list[Path]:
    """Save the log-mel (1, n_mels, 1 + T // hop) float32 of each ``*.wav`` in ``wav_dir`` (channel mean)."""
    mel_fn = LogMelSpectrogram(sr, n_fft, hop, n_mels)
    mel_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for wav in sorted(wav_dir.glob("*.wav")):
        _, file_sr = read_audio(wav)
        if file_sr != sr:
            raise ValueError(f"{wav} is {file_sr} Hz, expected {sr} Hz")
        with torch.no_grad():
            mel = mel_fn(load_audio(wav)[None]).contiguous()
        out = mel_dir / f"{wav.stem}.pt"
        torch.save(mel, out)
        written.append(out)
        logging.info("%s -> %s %s", wav.name, out.relative_to(HERE), tuple(mel.shape))
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    for wav_name, mel_name, sr, n_fft, hop, n_mels in FRONT_ENDS:
        write_mels(HERE / wav_name, HERE / mel_name, sr, n_fft, hop, n_mels)
