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
from torch.amp import GradScaler

from flow2gan.checkpoint import load_checkpoint
from flow2gan.config import get_generator_config
from flow2gan.features import LogMelSpectrogram
from flow2gan.models.gan import GAN, GANLossScales
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import audio_front_end
from flow2gan.training.condition import load_tokenizer, make_generator
from flow2gan.training.optim import Eden2, ScaledAdam
from flow2gan.training.options import FlowMatchingOptions, GANOptions, TrainOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    """Metrics of one training batch; ``kind`` is "" (stage 1), "g" or "d" (stage 2)."""

    kind: str
    metrics: dict[str, Tensor]


class Stage(Protocol):
    """The stage-specific part of training."""

    module: nn.Module
    generator: MelAudioGenerator
    paired_steps: bool  # D and G batches alternate: log both batches of a pair
    test_drop_silent: bool  # drop silent files from the TensorBoard test batch

    def states(self) -> dict[str, Any]:
        """Checkpoint key -> object with ``state_dict``/``load_state_dict`` (optimizers, schedulers)."""

    def learning_rates(self) -> dict[str, float]:
        """TensorBoard name suffix -> current learning rate."""

    def train_step(
        self,
        model: nn.Module,
        mel: Tensor,
        audio: Tensor,
        lens: Tensor,
        batch_idx_train: int,
        scaler: GradScaler,
    ) -> StepResult:
        """One optimisation step on a batch; ``model`` is ``module`` or its DDP wrapper."""

    def valid_step(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Validation losses of a batch (called under ``no_grad``)."""

    def synthesize(self, mel: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Label (``step_{n}``) -> (B, T) clamped audio of the TensorBoard test batch."""

    def checkpoint_params(self) -> dict[str, Any]:
        """Stage-specific values stored at the top level of checkpoints."""


def build_mel(generator: MelAudioGenerator) -> LogMelSpectrogram:
    """The conditioning front-end matching a generator config."""
    cfg = generator.config
    return LogMelSpectrogram(cfg.sampling_rate, cfg.mel_n_fft, cfg.mel_hop_length, cfg.n_mels)


def build_condition(generator: MelAudioGenerator, codec: str | None) -> nn.Module:
    """Audio (B, T) -> the generator's condition: log-mel, or codes from ``codec`` for a token model
    at a bandwidth drawn per batch (see :mod:`flow2gan.training.condition`)."""
    return audio_front_end(generator, None if codec is None else load_tokenizer(codec))


def optimizer_step(loss: Tensor, optimizer: ScaledAdam, scaler: GradScaler) -> None:
    """Backward of the scaled loss, then ``scaler.step`` and ``scaler.update``."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


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

    def states(self) -> dict[str, Any]:
        """Optimizer and scheduler, under the reference checkpoint keys."""
        return {"optimizer": self.optimizer, "scheduler": self.scheduler}

    def learning_rates(self) -> dict[str, float]:
        """``train/learning_rate``."""
        return {"": self.scheduler.get_last_lr()[0]}

    def train_step(
        self,
        model: nn.Module,
        mel: Tensor,
        audio: Tensor,
        lens: Tensor,
        batch_idx_train: int,
        scaler: GradScaler,
    ) -> StepResult:
        """FM loss, backward, LR set from the global batch index before the update, step, zero grads."""
        loss = model(mel, audio, lens)
        check_finite(loss, "loss")
        scaler.scale(loss).backward()
        self.scheduler.step_batch(batch_idx_train)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad()
        return StepResult("", {"loss": loss.detach()})

    def valid_step(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
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
        scales = GANLossScales(
            disc_loss_mp_scale=gan_opts.disc_loss_mp_scale,
            disc_loss_mr_scale=gan_opts.disc_loss_mr_scale,
            gen_loss_mp_scale=gan_opts.gen_loss_mp_scale,
            gen_loss_mr_scale=gan_opts.gen_loss_mr_scale,
            feat_map_loss_mp_scale=gan_opts.feat_map_loss_mp_scale,
            feat_map_loss_mr_scale=gan_opts.feat_map_loss_mr_scale,
            mel_recon_loss_scale=gan_opts.mel_recon_loss_scale,
        )
        self.module = GAN.from_config(self.generator, gan_opts.gan_name, loss_scales=scales)
        self.n_timesteps = gan_opts.n_timesteps
        self.gen_start_batch_idx = gan_opts.gen_start_batch_idx
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

    def train_step(
        self,
        model: nn.Module,
        mel: Tensor,
        audio: Tensor,
        lens: Tensor,
        batch_idx_train: int,
        scaler: GradScaler,
    ) -> StepResult:
        """A discriminator batch, or a generator batch; each optimizer zeroes its grads before backward."""
        if self.train_disc:
            loss, metrics = model(audio, mel, lens, self.n_timesteps, discriminator_step=True)
            check_finite(loss, "discriminator loss")
            self.optimizer_d.zero_grad()
            optimizer_step(loss, self.optimizer_d, scaler)
            self.scheduler_d.step_batch()
            if batch_idx_train >= self.gen_start_batch_idx:
                self.train_disc = False
            return StepResult("d", metrics)
        loss, metrics = model(audio, mel, lens, self.n_timesteps, discriminator_step=False)
        check_finite(loss, "generator loss")
        self.optimizer_g.zero_grad()
        optimizer_step(loss, self.optimizer_g, scaler)
        self.scheduler_g.step_batch()
        self.train_disc = True
        return StepResult("g", metrics)

    def valid_step(self, model: nn.Module, mel: Tensor, audio: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """Generator-side losses (the wrapper puts the generator in train mode, as the reference does)."""
        _, metrics = model(audio, mel, lens, self.n_timesteps, discriminator_step=False)
        return metrics

    def synthesize(self, mel: Tensor, lens: Tensor) -> dict[str, Tensor]:
        """The test batch with the stage's N steps."""
        n = self.n_timesteps
        return {f"step_{n}": self.generator.infer(mel, audio_lens=lens, n_timesteps=n, clamp_pred=True)}

    def checkpoint_params(self) -> dict[str, Any]:
        """The D/G flag (stored, but a resumed run starts with a D batch, as the reference's does)."""
        return {"train_disc": self.train_disc, "n_timesteps": self.n_timesteps}


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or inf; the loop saves ``bad-model-*.pt`` first."""


def check_finite(loss: Tensor, what: str) -> None:
    """Raise ``NonFiniteLossError`` for a NaN/inf loss."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{what} is {loss.item()}")


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast for fp16/bf16 training, a no-op context for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if dtype == "fp16" else torch.bfloat16)
