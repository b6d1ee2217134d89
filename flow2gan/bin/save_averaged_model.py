"""Average an experiment's checkpoints into a deployable ``{"model": generator_state_dict}`` file.

Writes ``exp_dir/epoch-{E}-avg-{A}[-use-avg-model][-only-gen].pt``; for a stage-2 (GAN) experiment the
wrapper is averaged and only its generator saved (no prefix), which ``get_model(checkpoint=...)`` loads
strictly. The file records the generator config and, for stage 2, ``n_timesteps``, the step count it
was fine-tuned for. The config, the stage and the GAN config are read from the training checkpoint.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flow2gan.bin.common import load_experiment
from flow2gan.cli import DefaultsHelpFormatter, optional_str, prog_name, str2bool
from flow2gan.training.experiment import export_generator


def parser() -> argparse.ArgumentParser:
    """Reference flags and defaults."""
    p = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.save_averaged_model"),
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--epoch", type=int, default=200, help="last epoch of the averaging window")
    add("--avg", type=int, default=20, help="number of epochs averaged")
    add(
        "--use-averaged-model",
        type=str2bool,
        default=True,
        help="average from the running model averages in epoch-(E-avg) and epoch-E (else plain mean)",
    )
    add("--exp-dir", type=Path, default=Path("./exp-pretrain"), help="experiment directory")
    add(
        "--model-name",
        type=optional_str,
        default=None,
        help="generator config name or JSON path (default: the config stored in the checkpoint)",
    )
    add("--gan-name", type=optional_str, default=None, help="GAN config (default: stored in the checkpoint)")
    add(
        "--load-gan",
        type=str2bool,
        default=None,
        help="the checkpoints hold the GAN wrapper (default: detected from the checkpoint)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Average and save; returns 0 (usage errors, unreadable epoch files included, exit with 2)."""
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    averaged = load_experiment(p, args)
    name = averaged.name(args.epoch, args.avg, args.use_averaged_model)
    export_generator(averaged.generator, averaged.n_timesteps, args.exp_dir / f"{name}.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
