"""What one training batch does in each stage; the shared loop in ``loop.py`` does everything else.

A stage owns the trained module (generator, or the GAN wrapper), its optimizers and schedulers, and
knows how to run a training batch, a validation batch and the TensorBoard test synthesis.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from flow2gan.config import get_generator_config
from flow2gan.models.gan import GAN
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import audio_front_end
from flow2gan.training.condition import load_tokenizer, make_generator
from flow2gan.training.optim import Eden2, ScaledAdam
from flow2gan.training.options import FlowMatchingOptions, GANOptions, TrainOptions
from flow2gan.weights import load_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageLosses:
    """What a training batch of a stage produced: the loss to minimise and the optimizer it belongs to.

    ``optimizer`` is a key of ``Stage.optimizers`` ("" in stage 1, "d" or "g" in stage 2) and also names
    the batch kind in logs; ``metrics`` are detached scalars for logging.
    """

    loss: Tensor
    metrics: dict[str, Tensor]
    optimizer: str


@dataclass(frozen=True)
class Optimization:
    """An optimizer with its Eden2 schedule, and when the schedule moves.

    ``lr_from_global_batch``: the reference's pre-training sets the LR from the global batch index
    before each update; its GAN stage instead counts each optimizer's own updates, stepping the
    schedule after each update. The loop calls both hooks around every update.
    """

    optimizer: ScaledAdam
    scheduler: Eden2
    lr_from_global_batch: bool

    def before_update(self, batch_idx_train: int) -> None:
        """Stage 1: LR of the global batch index."""
        if self.lr_from_global_batch:
            self.scheduler.step_batch(batch_idx_train)

    def after_update(self) -> None:
        """Stage 2: count this optimizer's update."""
        if not self.lr_from_global_batch:
            self.scheduler.step_batch()


class Stage(Protocol):
    """The stage-specific part of training: what a batch computes, with which optimizer, in which modes."""

    module: nn.Module
    generator: MelAudioGenerator
    optimizers: dict[str, Optimization]
    paired_steps: bool  # D and G batches alternate: log both batches of a pair
    test_drop_silent: bool  # drop silent files from the TensorBoard test batch

    def states(self) -> dict[str, Any]:
        """Checkpoint key -> object with ``state_dict``/``load_state_dict`` (optimizers, schedulers)."""

    def learning_rates(self) -> dict[str, float]:
        """TensorBoard name suffix -> current learning rate."""

    def losses(
        self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor, batch_idx_train: int
    ) -> StageLosses:
        """Set the train/eval modes and compute the losses of a training batch (``model``: module or DDP)."""

    def valid_losses(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Validation losses of a batch (called under ``no_grad`` with the module in eval mode)."""

    def synthesize(self, mel: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Label (``step_{n}``) -> (B, T) clamped audio of the TensorBoard test batch."""

    def checkpoint_params(self) -> dict[str, Any]:
        """Stage-specific values stored at the top level of checkpoints."""

    def resume_mid_epoch(self, ckpt: dict[str, Any]) -> None:
        """Restore the running state ``checkpoint_params`` saved, for a mid-epoch resume."""


def build_condition(generator: MelAudioGenerator, codec: str | None) -> nn.Module:
    """Audio (B, T) -> the generator's condition: log-mel, or codes from ``codec`` for a token model
    at a bandwidth drawn per batch (see :mod:`flow2gan.training.condition`)."""
    return audio_front_end(generator, None if codec is None else load_tokenizer(codec))


class FlowMatchingStage:
    """Stage 1: the generator trained with the spectral-scaled flow-matching loss."""

    paired_steps = False
    test_drop_silent = False

    def __init__(self, opts: TrainOptions, fm: FlowMatchingOptions) -> None:
        self.generator = make_generator(get_generator_config(opts.model_name), opts.codec)
        self.module = self.generator
        self.save_infer_steps = fm.save_infer_steps
        self.optimizer = ScaledAdam(
            [{"named_params": list(self.module.named_parameters()), "lr": fm.base_lr}],
            lr=fm.base_lr,
            clipping_scale=2.0,
        )
        self.scheduler = Eden2(self.optimizer, fm.lr_batches, opts.warmup_batches, warmup_start=0.1)
        self.optimizers = {"": Optimization(self.optimizer, self.scheduler, lr_from_global_batch=True)}

    def states(self) -> dict[str, Any]:
        """Optimizer and scheduler, under the reference checkpoint keys."""
        return {"optimizer": self.optimizer, "scheduler": self.scheduler}

    def learning_rates(self) -> dict[str, float]:
        """``train/learning_rate``."""
        return {"": self.scheduler.get_last_lr()[0]}

    def losses(
        self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor, batch_idx_train: int
    ) -> StageLosses:
        """The flow-matching loss (generator in train mode)."""
        self.generator.train()
        loss = model(mel, audio, lens)
        return StageLosses(loss, {"loss": loss.detach()}, "")

    def valid_losses(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """FM loss with fresh random t and noise (model in eval mode)."""
        return {"loss": model(mel, audio, lens)}

    def synthesize(self, mel: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """The test batch at each of ``--save-infer-steps``."""
        return {
            f"step_{n}": self.generator.infer(mel, audio_lens=lens, n_timesteps=n, clamp_pred=True)
            for n in self.save_infer_steps
        }

    def checkpoint_params(self) -> dict[str, Any]:
        """Nothing beyond the common options."""
        return {}

    def resume_mid_epoch(self, ckpt: dict[str, Any]) -> None:
        """Nothing to restore."""


class GANStage:
    """Stage 2: the N-step unrolled generator against MPD + MRD; D-only warm-up, then G/D alternation."""

    paired_steps = True
    test_drop_silent = True

    def __init__(self, opts: TrainOptions, gan_opts: GANOptions, initialise_generator: bool) -> None:
        config = get_generator_config(opts.model_name).replace(branch_dropout=0.0)
        self.generator = make_generator(config, opts.codec)
        if initialise_generator and gan_opts.generator_model_path:
            load_checkpoint(gan_opts.generator_model_path, self.generator, strict=False)
            logger.info("generator initialised from %s", gan_opts.generator_model_path)
        self.module = GAN.from_config(self.generator, gan_opts.gan_name, loss_scales=gan_opts.loss_scales)
        self.gan_name = gan_opts.gan_name
        self.n_timesteps = gan_opts.n_timesteps
        self.gen_start_batch_idx = gan_opts.gen_start_batch_idx
        self.mel_only_batches = gan_opts.mel_only_batches
        self.train_disc = True
        self.optimizer_g = ScaledAdam(
            self.module.generator.named_parameters(), lr=gan_opts.base_lr_gen, clipping_scale=2.0
        )
        self.optimizer_d = ScaledAdam(
            self.module.discriminator.named_parameters(), lr=gan_opts.base_lr_disc, clipping_scale=2.0
        )
        self.scheduler_g = Eden2(
            self.optimizer_g, gan_opts.lr_batches_gen, opts.warmup_batches, warmup_start=0.1
        )
        self.scheduler_d = Eden2(
            self.optimizer_d, gan_opts.lr_batches_disc, opts.warmup_batches, warmup_start=0.1
        )
        self.scheduler_g.step_batch(0)
        self.scheduler_d.step_batch(0)
        self.optimizers = {
            "d": Optimization(self.optimizer_d, self.scheduler_d, lr_from_global_batch=False),
            "g": Optimization(self.optimizer_g, self.scheduler_g, lr_from_global_batch=False),
        }

    def states(self) -> dict[str, Any]:
        """Generator states under the stage-1 keys, discriminator states under ``*_disc``."""
        return {
            "optimizer": self.optimizer_g,
            "scheduler": self.scheduler_g,
            "optimizer_disc": self.optimizer_d,
            "scheduler_disc": self.scheduler_d,
        }

    def learning_rates(self) -> dict[str, float]:
        """``train/learning_rate_g`` and ``train/learning_rate_d``."""
        return {"_g": self.scheduler_g.get_last_lr()[0], "_d": self.scheduler_d.get_last_lr()[0]}

    def losses(
        self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor, batch_idx_train: int
    ) -> StageLosses:
        """A discriminator batch (D-only until ``--gen-start-batch-idx``), then G and D batches alternate.

        The first ``--mel-only-batches`` batches are generator batches on the reconstruction losses alone
        (the mel loss, plus the phase / STFT losses when scaled), without discriminators.
        """
        if batch_idx_train < self.mel_only_batches:
            self.module.set_step_modes(discriminator_step=False)
            loss, metrics = model(
                audio, mel, lens, self.n_timesteps, discriminator_step=False, adversarial=False
            )
            return StageLosses(loss, metrics, "g")
        discriminator_step = self.train_disc
        self.module.set_step_modes(discriminator_step)
        loss, metrics = model(audio, mel, lens, self.n_timesteps, discriminator_step=discriminator_step)
        self.train_disc = not discriminator_step or batch_idx_train < self.gen_start_batch_idx
        return StageLosses(loss, metrics, "d" if discriminator_step else "g")

    def valid_losses(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Generator-side losses, with the generator in train mode as in the reference's validation."""
        self.module.set_step_modes(discriminator_step=False)
        _, metrics = model(audio, mel, lens, self.n_timesteps, discriminator_step=False)
        return metrics

    def synthesize(self, mel: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """The test batch with the stage's N steps."""
        n = self.n_timesteps
        return {f"step_{n}": self.generator.infer(mel, audio_lens=lens, n_timesteps=n, clamp_pred=True)}

    def checkpoint_params(self) -> dict[str, Any]:
        """The D/G flag (an epoch-end resume starts with a D batch, as the reference's), N, GAN config."""
        return {"train_disc": self.train_disc, "n_timesteps": self.n_timesteps, "gan_name": self.gan_name}

    def resume_mid_epoch(self, ckpt: dict[str, Any]) -> None:
        """Continue the D/G alternation where it stopped."""
        self.train_disc = bool(ckpt["train_disc"])


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast for fp16/bf16 training, a no-op context for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if dtype == "fp16" else torch.bfloat16)
