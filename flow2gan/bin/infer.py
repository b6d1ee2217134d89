"""Manifest-driven inference (``python -m flow2gan.bin.infer``, reference flags, SPEC §6.4).

Vocodes every recording of ``--test-recordings`` (whole files, mono, resampled to the model rate) in
un-shuffled padded batches: log-mel of the padded batch -> ``infer(mel, audio_lens, N, clamp)`` -> outputs
trimmed to each length, written as 16-bit WAV under ``output_dir/<path relative to --root-path>``.
The generator comes from ``--checkpoint`` / ``--hf-model-name`` or from averaging an experiment's
checkpoints (``--epoch/--avg/--use-averaged-model/--exp-dir``, ``--load-gan`` for stage-2 runs).
Silent files (RMS < 0.005) are skipped, as in the reference. A token model (``encodec_24k_*``) gets the
EnCodec codes of the padded batch at ``--bandwidth`` from ``--codec`` instead of the log-mel.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from flow2gan.audio import save_audio
from flow2gan.cli import optional_str, str2bool
from flow2gan.codec import EncodecTokenizer
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import audio_front_end
from flow2gan.pretrained import get_model, pretrained_info
from flow2gan.runtime import tune_malloc
from flow2gan.sampling import resolve_n_timesteps
from flow2gan.training.data import make_test_loader
from flow2gan.training.experiment import averaged_model_name, load_experiment_generator

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    """Reference flags and defaults, plus ``--device`` and ``--seed``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--epoch", type=int, default=20)
    add("--avg", type=int, default=1)
    add("--use-averaged-model", type=str2bool, default=True)
    add("--exp-dir", type=Path, default=Path("./exp-finetune"))
    add("--checkpoint", type=optional_str, default=None, help="a deployable {'model': ...} file")
    add("--hf-model-name", type=optional_str, default=None, help="a released model name")
    add("--output-dir", type=optional_str, default=None, help="required with --checkpoint/--hf-model-name")
    add("--load-gan", type=str2bool, default=True, help="experiment checkpoints hold the GAN wrapper")
    add(
        "--model-name",
        type=optional_str,
        default=None,
        help="generator config name or JSON path (default: the config stored in the checkpoint)",
    )
    add("--gan-name", type=str, default="gan_multi_scale_mel_recon")
    add("--n-timesteps", type=int, default=1)
    add("--root-path", type=optional_str, default=None, help="outputs mirror source paths relative to it")
    add("--test-recordings", type=str, default="", help="RecordingSet manifest (JSONL.gz)")
    add("--batch-size", type=int, default=64)
    add("--num-workers", type=int, default=8)
    add("--device", type=optional_str, default=None, help="default: cuda when available")
    add("--seed", type=int, default=None, help="fix the noise (the reference draws it unseeded)")
    add("--codec", type=optional_str, default=None, help="token models: EnCodec hub name or local folder")
    add("--bandwidth", type=float, default=6.0, help="token models: EnCodec bandwidth in kbps")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Reject inconsistent flags (``SystemExit``) before anything is written."""
    if not args.test_recordings:
        raise SystemExit("--test-recordings is required")
    if args.checkpoint or args.hf_model_name:
        if args.load_gan:
            raise SystemExit(
                "--checkpoint/--hf-model-name need --load-gan False (they hold a bare generator)"
            )
        if not args.output_dir:
            raise SystemExit("--output-dir is required with --checkpoint/--hf-model-name")
        if args.hf_model_name and not args.checkpoint:
            released = pretrained_info(args.hf_model_name).n_timesteps
            try:
                resolve_n_timesteps(args.n_timesteps, released, "error", args.hf_model_name)
            except ValueError as exc:
                raise SystemExit(str(exc)) from exc


def load_generator(args: argparse.Namespace) -> tuple[MelAudioGenerator, Path]:
    """The generator to run and the output directory, following the reference's rules."""
    if args.checkpoint or args.hf_model_name:
        model, _ = get_model(args.model_name, args.hf_model_name, args.checkpoint)
        return model, Path(args.output_dir)
    averaged = load_experiment_generator(
        args.exp_dir,
        args.epoch,
        args.avg,
        args.use_averaged_model,
        args.model_name,
        args.load_gan,
        args.gan_name,
    )
    name = averaged_model_name(args.epoch, args.avg, args.use_averaged_model, load_gan=False)
    return averaged.generator, args.exp_dir / f"wav-{name}-pred-step-{args.n_timesteps}"


def output_path(output_dir: Path, source: str, root: str | None) -> Path:
    """``output_dir / <source relative to root>`` (the source path verbatim without a root)."""
    rel = Path(source).relative_to(root) if root else Path(source.lstrip("/"))
    return output_dir / rel.with_suffix(".wav")


def main(argv: list[str] | None = None) -> int:
    """Vocode the manifest; returns 0."""
    args = parser().parse_args(argv)
    check_args(args)
    tune_malloc()
    log_dir = args.exp_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[
            logging.FileHandler(log_dir / f"log-infer-{time.strftime('%Y-%m-%d-%H-%M-%S')}"),
            logging.StreamHandler(),
        ],
    )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, output_dir = load_generator(args)
    model.to(device).eval()
    codec = EncodecTokenizer(args.codec) if args.codec else None
    try:
        cond_fn = audio_front_end(model, codec, args.bandwidth).to(device)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    sr = model.config.sampling_rate
    loader = make_test_loader(args.test_recordings, sr, args.batch_size, args.num_workers)
    generator = torch.Generator(device).manual_seed(args.seed) if args.seed is not None else None
    written = 0
    with torch.inference_mode():
        for audio, lens, names in tqdm(loader, desc="batches", unit="batch"):
            if audio.shape[0] == 0:
                continue
            audio, lens = audio.to(device), lens.to(device)
            wav = model.infer(
                cond_fn(audio),
                audio_lens=lens,
                n_timesteps=args.n_timesteps,
                clamp_pred=True,
                generator=generator,
            )
            for row, (name, length) in enumerate(zip(names, lens.tolist(), strict=True)):
                save_audio(output_path(output_dir, name, args.root_path), wav[row, :length], sr)
                written += 1
    logger.info("wrote %d files to %s", written, output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
