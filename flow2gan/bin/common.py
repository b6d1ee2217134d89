"""Helpers shared by the inference command-line tools: usage names, model options and loading."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from flow2gan.cli import optional_str
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.pretrained import (
    EXIT_HUB_UNAVAILABLE,
    HF_MODELS,
    HubUnavailableError,
    get_model,
    pretrained_info,
)
from flow2gan.runtime import resolve_device
from flow2gan.sampling import resolve_n_timesteps

if TYPE_CHECKING:
    from flow2gan.training.experiment import AveragedGenerator

logger = logging.getLogger(__name__)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--hf-model-name``, ``--model-name``, ``--n-timesteps``, ``--device``."""
    add = parser.add_argument
    add(
        "--checkpoint",
        type=optional_str,
        default=None,
        help="local weight file ({'model': state_dict}: a released file or one written by "
        "save_averaged_model); wins over --hf-model-name",
    )
    add(
        "--hf-model-name",
        type=optional_str,
        default=None,
        help=f"released model, downloaded once from the Hugging Face hub: {', '.join(HF_MODELS)}",
    )
    add(
        "--model-name",
        type=optional_str,
        default=None,
        help="generator config, a registered name (mel_24k_base, mel_44k_128band_512x_base, mel_24k_small, "
        "encodec_24k_base, ...) or a JSON file; default: the config stored in the checkpoint, else the "
        "released model's, else mel_24k_base",
    )
    add(
        "--n-timesteps",
        type=int,
        default=None,
        help="Euler steps; default: the step count the checkpoint was fine-tuned for (1 when it does "
        "not record one); a released model runs only with its own",
    )
    add(
        "--device",
        type=optional_str,
        default=None,
        help="torch device such as cpu or cuda:0 (default: cuda if available)",
    )


def load_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[MelAudioGenerator, int]:
    """The generator of ``--checkpoint``/``--hf-model-name`` on ``--device`` (eval mode) and its step count.

    Bad options are usage errors (exit code 2, checked before any download); a released file that is
    not cached while the hub is unusable is logged and exits with ``EXIT_HUB_UNAVAILABLE``.
    """
    if not args.checkpoint and not args.hf_model_name:
        parser.error("give --checkpoint <file> or --hf-model-name <released model>")
    try:
        if args.checkpoint is None:
            released = pretrained_info(args.hf_model_name).n_timesteps
            resolve_n_timesteps(args.n_timesteps, released, "error", args.hf_model_name)
        else:
            resolve_n_timesteps(args.n_timesteps)
            if args.hf_model_name:
                logger.warning("--checkpoint given: ignoring --hf-model-name %s", args.hf_model_name)
        device = resolve_device(args.device)
        model, _ = get_model(args.model_name, args.hf_model_name, args.checkpoint, device=device)
        return model, resolve_n_timesteps(args.n_timesteps, model.default_n_timesteps, "warn")
    except HubUnavailableError as exc:
        logger.error("%s", exc)
        raise SystemExit(EXIT_HUB_UNAVAILABLE) from exc
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))


def load_experiment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AveragedGenerator:
    """The averaged generator of ``--exp-dir`` / ``--epoch`` / ``--avg`` (``--use-averaged-model``,
    ``--model-name``, ``--load-gan``, ``--gan-name``), as ``training.experiment.load_experiment_generator``.

    A bad window, a missing or unreadable epoch file, weights that do not fit and an unknown
    ``--gan-name`` are usage errors (exit code 2, the message names the file), not tracebacks.
    """
    from flow2gan.training.experiment import load_experiment_generator

    try:
        return load_experiment_generator(
            args.exp_dir,
            args.epoch,
            args.avg,
            args.use_averaged_model,
            args.model_name,
            args.load_gan,
            args.gan_name,
        )
    except (ValueError, FileNotFoundError, KeyError) as exc:  # KeyError: an unknown --gan-name
        parser.error(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
