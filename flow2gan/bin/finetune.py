"""Stage 2: GAN fine-tuning of the N-step generator (``python -m flow2gan.bin.finetune``, reference flags)."""

from __future__ import annotations

from functools import partial

from flow2gan.training.loop import train
from flow2gan.training.options import GANOptions, TrainOptions, finetune_parser, gan_options, parse_options
from flow2gan.training.stages import GANStage


def make_stage(opts: TrainOptions, gan_opts: GANOptions, fresh_start: bool) -> GANStage:
    """Stage factory; the generator is initialised from ``--generator-model-path`` only on a fresh start."""
    return GANStage(opts, gan_opts, initialise_generator=fresh_start)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and train."""
    opts, gan_opts = parse_options(finetune_parser(), argv, gan_options)
    train(opts, partial(make_stage, opts, gan_opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
