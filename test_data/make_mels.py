"""Write the log-mel ``(1, n_mels, frames)`` of every test WAV as ``test_data/<mel dir>/<name>.pt``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from flow2gan.audio import load_audio, read_audio
from flow2gan.config import get_generator_config
from flow2gan.features import mel_frontend

HERE = Path(__file__).resolve().parent

# (wav dir, mel dir, config) — the two released front-ends.
FRONT_ENDS = (
    ("wav", "mel", "mel_24k_base"),
    ("wav_44k", "mel_44k_128band_512x", "mel_44k_128band_512x_base"),
)


def write_mels(wav_dir: Path, mel_dir: Path, model_name: str) -> list[Path]:
    """Save the log-mel (1, n_mels, 1 + T // hop) float32 of each ``*.wav`` in ``wav_dir`` (channel mean)."""
    mel_fn = mel_frontend(get_generator_config(model_name))
    sr = mel_fn.sampling_rate
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
    for wav_name, mel_name, model_name in FRONT_ENDS:
        write_mels(HERE / wav_name, HERE / mel_name, model_name)
