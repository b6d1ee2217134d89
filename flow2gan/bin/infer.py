"""Vocode every recording of a manifest (the reference's manifest-driven inference tool).

Whole files of --test-recordings (a lhotse RecordingSet JSONL.gz), downmixed and resampled to the
model rate, in un-shuffled padded batches: condition of the padded batch -> N-step sampler -> outputs
cut to each length, written as 16-bit WAVs under --output-dir (a file's path relative to --root-path,
or its own relative path, or the bare file name for an absolute path). Silent files (RMS < 0.005) are
skipped, as in the reference. The generator is --checkpoint / --hf-model-name, or else the average of
an experiment's checkpoints (--exp-dir, --epoch, --avg, --use-averaged-model, --load-gan), written to
<exp-dir>/wav-epoch-E-avg-A[-use-avg-model]-pred-step-N. A token model (encodec_24k_*) gets the
EnCodec codes of the padded batch at --bandwidth from --codec. Log: <exp-dir>/log/log-infer-<time>.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from flow2gan.audio import not_a_file
from flow2gan.bin.common import add_model_options, load_experiment, load_model
from flow2gan.cli import optional_str, prog_name, str2bool
from flow2gan.codec import EncodecTokenizer
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import audio_front_end
from flow2gan.runtime import resolve_device, setup_logging, tune_malloc
from flow2gan.sampling import resolve_n_timesteps
from flow2gan.vocode import read_manifest_sources, vocode_manifest

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    """Reference flags and defaults, plus ``--device``, ``--seed``, ``--codec`` and ``--bandwidth``."""
    p = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.infer"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    add = p.add_argument
    add(
        "--test-recordings",
        type=str,
        default="",
        help="recordings to vocode: a lhotse RecordingSet JSONL(.gz)",
    )
    add("--output-dir", type=optional_str, default=None, help="required with --checkpoint/--hf-model-name")
    add(
        "--root-path",
        type=optional_str,
        default=None,
        help="outputs mirror source paths relative to this folder",
    )
    add("--exp-dir", type=Path, default=Path("./exp-finetune"), help="experiment folder (checkpoints, log/)")
    add("--epoch", type=int, default=20, help="experiment mode: last epoch of the average")
    add("--avg", type=int, default=1, help="experiment mode: number of epochs averaged")
    add(
        "--use-averaged-model",
        type=str2bool,
        default=True,
        help="experiment mode: average the running model averages stored in the epoch files",
    )
    add(
        "--load-gan",
        type=str2bool,
        default=True,
        help="experiment mode: the epoch files hold the GAN wrapper (stage 2); ignored with --checkpoint",
    )
    add("--gan-name", type=str, default="gan_multi_scale_mel_recon", help="experiment mode: the GAN config")
    add("--batch-size", type=int, default=64, help="recordings per padded batch")
    add("--num-workers", type=int, default=8, help="audio-loading worker processes (0: in the main process)")
    add("--seed", type=int, default=None, help="fix the start noise (the reference draws it unseeded)")
    add("--codec", type=optional_str, default=None, help="token models: EnCodec hub name or local folder")
    add("--bandwidth", type=float, default=6.0, help="token models: EnCodec bandwidth in kbps")
    return p


def experiment_generator(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[MelAudioGenerator, int, Path]:
    """The averaged generator of an experiment, its step count and its output folder (reference naming)."""
    from flow2gan.training.experiment import averaged_model_name

    averaged = load_experiment(parser, args)
    model, trained_for = averaged.generator, averaged.n_timesteps
    n = resolve_n_timesteps(args.n_timesteps, trained_for, "warn", f"epoch {args.epoch} of {args.exp_dir}")
    name = averaged_model_name(args.epoch, args.avg, args.use_averaged_model, load_gan=False)
    return model.to(args.device), n, args.exp_dir / f"wav-{name}-pred-step-{n}"


def main(argv: list[str] | None = None) -> int:
    """Vocode the manifest; returns 0, or 1 when no recording could be vocoded (usage errors exit with 2)."""
    p = parser()
    args = p.parse_args(argv)
    if not args.test_recordings:
        p.error("--test-recordings is required")
    if (args.checkpoint or args.hf_model_name) and not args.output_dir:
        p.error("--output-dir is required with --checkpoint/--hf-model-name")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_workers < 0:
        p.error(f"--num-workers must be >= 0, got {args.num_workers}")
    for flag, folder in (("--exp-dir", args.exp_dir), ("--output-dir", args.output_dir)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            p.error(f"{flag} {folder} is a file, not a folder")
    try:
        args.device = resolve_device(args.device)
        sources = read_manifest_sources(args.test_recordings)
    except ValueError as exc:
        p.error(str(exc))
    if not any(Path(source).is_file() for source in sources):
        p.error(
            f"none of the {len(sources)} audio files of {args.test_recordings} is a file: the first, "
            f"'{sources[0]}', {not_a_file(Path(sources[0]))}"
        )
    setup_logging(log_file=args.exp_dir / "log" / f"log-infer-{time.strftime('%Y-%m-%d-%H-%M-%S')}")
    tune_malloc()
    if args.checkpoint or args.hf_model_name:
        model, n_timesteps = load_model(p, args)
        output_dir = Path(args.output_dir)
    else:
        model, n_timesteps, output_dir = experiment_generator(p, args)
    device = next(model.parameters()).device
    try:
        codec = EncodecTokenizer(args.codec) if args.codec else None
        cond_fn = audio_front_end(model, codec, args.bandwidth).to(device)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    written = vocode_manifest(
        model,
        cond_fn,
        sources,
        output_dir,
        root_path=args.root_path,
        n_timesteps=n_timesteps,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        device=device,
    )
    logger.info("wrote %d files to %s", written, output_dir)
    if 0 < written < len(sources):
        logger.warning(
            "%d of the %d recordings were not vocoded (silent or unreadable; see above)",
            len(sources) - written,
            len(sources),
        )
    if written == 0:
        logger.error("none of the %d recordings was vocoded (unreadable or silent; see above)", len(sources))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
