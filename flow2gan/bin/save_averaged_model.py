"""Average an experiment's checkpoints into a deployable ``{"model": generator_state_dict}`` file.

Writes ``exp_dir/epoch-{E}-avg-{A}[-use-avg-model][-only-gen].pt`` (SPEC §5.5); with ``--load-gan True``
the GAN wrapper is averaged and only its generator saved (no prefix), which ``get_model(checkpoint=...)``
loads strictly. Stage-2 files also record ``n_timesteps``, the step count they were fine-tuned for.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flow2gan.bin.common import str2bool
from flow2gan.checkpoint import save_atomic
from flow2gan.training.export import averaged_model_name, load_experiment_generator


def parser() -> argparse.ArgumentParser:
    """Reference flags and defaults."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epoch", type=int, default=200)
    p.add_argument("--avg", type=int, default=20)
    p.add_argument("--use-averaged-model", type=str2bool, default=True)
    p.add_argument("--exp-dir", type=Path, default=Path("./exp-pretrain"))
    p.add_argument("--model-name", type=str, default="mel_24k_base")
    p.add_argument("--gan-name", type=str, default="gan_multi_scale_mel_recon")
    p.add_argument("--load-gan", type=str2bool, default=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Average and save; returns 0."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    generator, n_timesteps = load_experiment_generator(
        args.exp_dir,
        args.epoch,
        args.avg,
        args.use_averaged_model,
        args.model_name,
        args.load_gan,
        args.gan_name,
    )
    name = averaged_model_name(args.epoch, args.avg, args.use_averaged_model, args.load_gan)
    out = args.exp_dir / f"{name}.pt"
    ckpt = {"model": generator.state_dict()}
    if n_timesteps is not None:
        ckpt["n_timesteps"] = n_timesteps
    save_atomic(ckpt, out)
    logging.info("saved %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
