"""The multi-branch, multi-resolution Fourier-domain generator and its flow-matching loss.

The sampler lives in :mod:`flow2gan.sampling`; ``infer``/``infer_chunked`` are thin wrappers around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flow2gan import sampling
from flow2gan.config import GeneratorConfig
from flow2gan.features import LinearFilterSpectrogram, complex_stft
from flow2gan.models.envelope import MelEnvelope
from flow2gan.models.modules import BiasNorm, ConvNeXtBlock, fit_length, sinusoidal_embedding


def frame_mask(lengths: Tensor, hop_length: int, n_frames: int) -> Tensor:
    """Valid-frame mask of a centred STFT, frame < 1 + len // hop: (B,) -> (B, 1, n_frames) float."""
    valid = 1 + torch.div(lengths, hop_length, rounding_mode="floor")
    frames = torch.arange(n_frames, device=lengths.device)
    return (frames.unsqueeze(0) < valid.unsqueeze(1)).unsqueeze(1).float()


class ConditionEncoder(nn.Module):
    """Mel encoder shared by all branches, never masked: (B, M, F) -> (B, E, F)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        width = config.cond_enc_channels
        self.in_proj = nn.Conv1d(config.n_mels, width, 3, padding=1)
        self.in_norm = BiasNorm(width)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(
                width,
                width * config.cond_enc_hidden_factor,
                config.cond_enc_conv_kernel_size,
                residual_scale=bool(config.residual_scale),
            )
            for _ in range(config.cond_enc_num_layers)
        )

    def forward(self, mel: Tensor) -> Tensor:
        """(B, M, F) -> (B, E, F)."""
        x = self.in_norm(self.in_proj(mel))
        for block in self.blocks:
            x = block(x)
        return x


class Decoder(nn.Module):
    """ConvNeXt stack over packed [Re; Im] STFT channels, conditioned on mel and flow time."""

    def __init__(self, config: GeneratorConfig, branch: int, cond_channels: int) -> None:
        super().__init__()
        io_channels = config.n_ffts[branch] + 2
        width = config.channels[branch]
        hf = config.hidden_factor
        te = config.time_embed_channels
        self.time_embed_channels = te
        self.in_proj = nn.Conv1d(io_channels, width, 1)
        self.in_norm = BiasNorm(width)
        self.time_mlp = nn.Sequential(nn.Linear(te, te * hf), nn.SiLU(), nn.Linear(te * hf, te))
        self.cond_mlp = nn.Sequential(
            nn.Conv1d(cond_channels, cond_channels * hf, 1),
            nn.PReLU(cond_channels * hf),
            nn.Conv1d(cond_channels * hf, cond_channels, 1),
        )
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(
                width,
                width * hf,
                config.conv_kernel_sizes[branch],
                cond_channels=cond_channels,
                time_channels=te,
                residual_scale=bool(config.residual_scale),
            )
            for _ in range(config.num_layers[branch])
        )
        self.out_proj = nn.Conv1d(width, io_channels, 1)

    def cond_terms(self, cond: Tensor) -> list[Tensor]:
        """Per-block condition terms from the upsampled condition: (B, E, F_i) -> L x (B, C, F_i)."""
        cond = self.cond_mlp(cond)
        return [block.cond_term(cond) for block in self.blocks]

    def time_scales(self, t: Tensor) -> list[Tensor]:
        """Per-block time modulations: (B,) -> L x (B, C, 1)."""
        emb = sinusoidal_embedding(t, self.time_embed_channels).to(self.time_mlp[0].weight.dtype)
        tau = self.time_mlp(emb)
        return [block.time_scale(tau) for block in self.blocks]

    def forward(
        self, spec: Tensor, cond_terms: list[Tensor], time_scales: list[Tensor], mask: Tensor | None
    ) -> Tensor:
        """(B, N + 2, F_i) -> (B, N + 2, F_i)."""
        x = self.in_norm(self.in_proj(spec))
        for block, cond_term, time_scale in zip(self.blocks, cond_terms, time_scales, strict=True):
            x = block(x, cond_term, time_scale, mask)
        return self.out_proj(x)


class WindowBuffer(nn.Module):
    """Holds a periodic Hann window as buffer ``window`` (reference state-dict layout)."""

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(n_fft))


class BranchEstimator(nn.Module):
    """One resolution: STFT -> decoder -> iSTFT, returning the branch's waveform estimate."""

    def __init__(self, config: GeneratorConfig, branch: int, cond_channels: int) -> None:
        super().__init__()
        self.n_fft = config.n_ffts[branch]
        self.hop_length = config.hop_lengths[branch]
        self.upsample_factor = config.mel_hop_length // self.hop_length
        self.fft = WindowBuffer(self.n_fft)
        self.ifft = WindowBuffer(self.n_fft)
        self.decoder = Decoder(config, branch, cond_channels)

    def n_frames(self, n_samples: int) -> int:
        """STFT frame count of a centred STFT of ``n_samples``."""
        return 1 + n_samples // self.hop_length

    def cond_terms(self, cond_enc: Tensor, n_samples: int) -> list[Tensor]:
        """Repeat mel frames to the branch hop, fit, project: (B, E, F) -> L x (B, C, F_i)."""
        cond = cond_enc.repeat_interleave(self.upsample_factor, dim=-1)
        return self.decoder.cond_terms(fit_length(cond, self.n_frames(n_samples)))

    def analyze(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Centred STFT of (B, T) -> real, imag (B, n_fft // 2 + 1, 1 + T // hop), in ``x``'s dtype."""
        spec = complex_stft(x, self.n_fft, self.hop_length, self.fft.window.to(x.dtype))
        return spec.real, spec.imag

    def synthesize(self, real: Tensor, imag: Tensor) -> Tensor:
        """Centred iSTFT of real, imag (B, n_fft // 2 + 1, F) -> (B, hop * (F - 1)), in their dtype."""
        spec = torch.complex(real, imag)
        window = self.ifft.window.to(real.dtype)
        return torch.istft(spec, self.n_fft, self.hop_length, self.n_fft, window, center=True)

    def forward(
        self,
        x: Tensor,
        cond_terms: list[Tensor],
        time_scales: list[Tensor],
        lengths: Tensor | None,
        transform: nn.Module | None = None,
        scalings: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """(B, T) -> (B, T); the last ``T mod hop`` samples are zeros.

        ``transform`` (with ``analyze``/``synthesize`` like this module's) replaces torch.stft/istft,
        e.g. by the export-friendly versions of :mod:`flow2gan.deploy`. ``scalings`` = per-bin
        ``(c_in, c_skip, c_out)`` of envelope preconditioning (:mod:`flow2gan.models.envelope`):
        the decoder sees ``c_in * STFT`` and the output spectrum is ``c_skip * STFT + c_out * decoder``.
        """
        transform = self if transform is None else transform
        n_samples = x.shape[-1]
        # The STFT and iSTFT run in fp32 (fp64 for a double model) whatever the network's dtype, as
        # under autocast: a .half() / bfloat16 model runs only its layers in reduced precision.
        wave_dtype = sampling.waveform_dtype(x.dtype)
        real, imag = transform.analyze(x.to(wave_dtype))
        net_dtype = self.decoder.in_proj.weight.dtype
        mask = None if lengths is None else frame_mask(lengths, self.hop_length, real.shape[-1]).to(net_dtype)
        spec = torch.cat([real, imag], dim=1)
        if scalings is not None:
            c_in, c_skip, c_out = (s.repeat(1, 2, 1) for s in scalings)
            out = self.decoder((c_in * spec).to(net_dtype), cond_terms, time_scales, mask)
            out = c_skip * spec + c_out * out.to(wave_dtype)
        else:
            out = self.decoder(spec.to(net_dtype), cond_terms, time_scales, mask)
        if mask is not None:
            out = out * mask
        real, imag = out.to(wave_dtype).chunk(2, dim=1)
        return fit_length(transform.synthesize(real, imag), n_samples)


@dataclass(frozen=True)
class PreparedCondition:
    """Everything that depends only on the mel: per-branch, per-block condition terms for T samples and,
    with envelope preconditioning, the per-branch spectral envelopes (B, N_i/2+1, F_i)."""

    n_samples: int
    branch_terms: list[list[Tensor]]
    envelopes: list[Tensor] | None = None


class MelAudioGenerator(nn.Module):
    """Mel-conditioned Flow2GAN generator: endpoint estimator and FM loss (a :mod:`flow2gan.sampling` model).

    Build with ``MelAudioGenerator(config)`` or, like the reference, ``MelAudioGenerator(**config_dict)``.
    """

    def __init__(self, config: GeneratorConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        if config is None:
            config = GeneratorConfig.from_dict(kwargs)
        elif kwargs:
            raise TypeError("pass either a GeneratorConfig or keyword arguments, not both")
        self.config = config
        self.default_n_timesteps: int | None = None
        self.loss_spec = LinearFilterSpectrogram(
            config.sampling_rate, config.loss_n_fft, config.loss_hop_length, config.loss_n_filters
        )
        self.cond_encoder = ConditionEncoder(config) if config.use_cond_encoder else None
        cond_channels = config.cond_enc_channels if config.use_cond_encoder else config.n_mels
        self.estimators = nn.ModuleList(
            BranchEstimator(config, i, cond_channels) for i in range(len(config.n_ffts))
        )
        self.envelope = MelEnvelope(config) if config.envelope_precond else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: conv/linear weights ~ N(0, 0.015^2) (truncated at +-2), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.015)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def frame_hop(self) -> int:
        """Output samples per mel frame (sampler protocol, :mod:`flow2gan.sampling`)."""
        return self.config.mel_hop_length

    @property
    def init_noise_scale(self) -> float:
        """Standard deviation of the sampler's start noise."""
        return self.config.init_noise_scale

    @property
    def pred_x1(self) -> bool:
        """Whether the estimator predicts the endpoint x1 (else the velocity)."""
        return self.config.pred_x1

    @property
    def param_dtype(self) -> torch.dtype:
        """Dtype of the network's weights; inputs are cast to it (fp32 also under autocast)."""
        return next(self.parameters()).dtype

    def check_cond(self, mel: Tensor) -> Tensor:
        """Validate a log-mel (B, M, F) or (M, F); returns (B, M, F) or raises ``ValueError``."""
        return sampling.check_mel(mel, self.config, self.param_dtype)

    def encode_cond(self, mel: Tensor, check: bool = True) -> Tensor:
        """Condition encoder, run once per call: (B, M, F) -> (B, E, F); ``check=False`` skips validation.

        With envelope preconditioning the log-mel rides along: (B, E + M, F), split again by
        :meth:`prepare_condition`.
        """
        if check:
            mel = self.check_cond(mel)
        encoded = mel if self.cond_encoder is None else self.cond_encoder(mel)
        return encoded if self.envelope is None else torch.cat([encoded, mel], dim=1)

    def chunk_context(self, n_timesteps: int) -> int:
        """Mel frames of context per chunk side for exact chunked inference."""
        return sampling.chunk_context(self.config, n_timesteps)

    def prepare_condition(self, cond_enc: Tensor, n_samples: int) -> PreparedCondition:
        """Per-branch condition terms for a waveform of ``n_samples`` (reused across Euler steps)."""
        envelopes = None
        if self.envelope is not None:
            cond_enc, mel = cond_enc[:, : -self.config.n_mels], cond_enc[:, -self.config.n_mels :]
            wave_dtype = sampling.waveform_dtype(mel.dtype)
            envelopes = [
                self.envelope(mel.to(wave_dtype), i, est.n_frames(n_samples))
                for i, est in enumerate(self.estimators)
            ]
        terms = [est.cond_terms(cond_enc, n_samples) for est in self.estimators]
        return PreparedCondition(n_samples, terms, envelopes)

    def estimate_prepared(
        self,
        x: Tensor,
        cond: PreparedCondition,
        t: Tensor,
        lengths: Tensor | None,
        transforms: nn.ModuleList | None = None,
    ) -> Tensor:
        """Endpoint prediction from a prepared condition: x (B, T), t (B,) or (B, 1) -> (B, T)."""
        if x.shape[-1] != cond.n_samples:
            raise ValueError(f"x has {x.shape[-1]} samples, the condition was prepared for {cond.n_samples}")
        t = t.reshape(-1).to(x.dtype)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])
        transforms = transforms if transforms is not None else [None] * len(self.estimators)
        outs = []
        for i, (est, terms, transform) in enumerate(
            zip(self.estimators, cond.branch_terms, transforms, strict=True)
        ):
            scalings = None
            if cond.envelopes is not None:
                scalings = self.envelope.scalings(cond.envelopes[i], t.to(cond.envelopes[i].dtype), i)
            outs.append(est(x, terms, est.decoder.time_scales(t), lengths, transform, scalings))
        return self.fuse_branches(torch.stack(outs, dim=1))

    def fuse_branches(self, branches: Tensor) -> Tensor:
        """Mean (or sum) over branches with training-time branch dropout: (B, n, T) -> (B, T)."""
        n = branches.shape[1]
        p = self.config.branch_dropout
        if self.training and p > 0 and n > 1:
            batch = branches.shape[0]
            drop = torch.rand(batch, device=branches.device) < p
            which = torch.randint(n, (batch,), device=branches.device)
            weights = torch.ones(batch, n, device=branches.device, dtype=branches.dtype)
            rows = drop.nonzero(as_tuple=True)[0]
            weights[rows] = n / (n - 1)
            weights[rows, which[rows]] = 0.0
            branches = branches * weights.unsqueeze(-1)
        return branches.mean(dim=1) if self.config.branch_reduction == "mean" else branches.sum(dim=1)

    def estimate(self, x: Tensor, cond_enc: Tensor, t: Tensor, audio_lens: Tensor | None = None) -> Tensor:
        """Endpoint prediction g(x_t, t | c): x (B, T), cond_enc (B, E, F), t (B,) or (B, 1) -> (B, T)."""
        return self.estimate_prepared(x, self.prepare_condition(cond_enc, x.shape[-1]), t, audio_lens)

    def infer(
        self,
        cond: Tensor,
        audio_lens: Tensor | None = None,
        n_timesteps: int | None = None,
        clamp_pred: bool = False,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Euler sampler from ``0.1 * noise``: log-mel (B, M, F) -> waveform (B, T), T = F * mel_hop.

        ``noise`` is the already-scaled start (B, T); ``n_timesteps=None`` uses the step count the
        loaded checkpoint was made for, else 1. Differentiable when gradients are enabled (GAN stage).
        See :func:`flow2gan.sampling.infer`.
        """
        return sampling.infer(self, cond, audio_lens, n_timesteps, clamp_pred, noise, generator)

    def infer_chunked(
        self,
        cond: Tensor,
        chunk_size: int,
        n_timesteps: int | None = None,
        clamp_pred: bool = False,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Like :meth:`infer` (no lengths) but ``chunk_size`` mel frames at a time, with exact context.

        See :func:`flow2gan.sampling.infer_chunked`.
        """
        return sampling.infer_chunked(self, cond, chunk_size, n_timesteps, clamp_pred, noise, generator)

    def fm_loss(self, pred: Tensor, target: Tensor, audio_lens: Tensor | None = None) -> Tensor:
        """Spectral-energy-scaled flow-matching loss of pred vs target, both (B, T) -> scalar."""
        err = pred - target
        cfg = self.config
        if not cfg.spec_scaling_loss:
            sq = err**2
            if audio_lens is None:
                return sq.mean()
            mask = torch.arange(err.shape[-1], device=err.device).unsqueeze(0) < audio_lens.unsqueeze(1)
            return (sq * mask).sum() / mask.sum()
        spec_target = self.loss_spec(target)
        spec_err = self.loss_spec(err)
        weight = torch.clamp(
            (spec_target + cfg.loss_eps) ** (-cfg.loss_power), min=cfg.loss_scale_min, max=cfg.loss_scale_max
        )
        n_frames = spec_err.shape[-1]
        if audio_lens is None:
            mask = torch.ones(err.shape[0], 1, n_frames, device=err.device)
        else:
            mask = frame_mask(audio_lens, cfg.loss_hop_length, n_frames)
        return (spec_err * weight * mask).sum() / (mask.sum() * cfg.loss_n_filters)

    def forward(self, cond: Tensor, audio: Tensor, audio_lens: Tensor | None = None) -> Tensor:
        """Training loss with random t ~ U[0,1) and noise: mel (B, M, F), audio (B, T) -> scalar."""
        if self.training and self.config.max_add_noise_scale > 0:
            level = torch.rand(cond.shape[0], 1, 1, device=cond.device) * self.config.max_add_noise_scale
            cond = cond + torch.randn_like(cond) * level
        cond_enc = self.encode_cond(cond)
        x0 = self.config.init_noise_scale * torch.randn_like(audio)
        t = torch.rand(audio.shape[0], 1, device=audio.device, dtype=audio.dtype)
        x_t = (1 - t) * x0 + t * audio
        pred = self.estimate(x_t, cond_enc, t, audio_lens)
        target = audio if self.config.pred_x1 else audio - x0
        return self.fm_loss(pred, target, audio_lens)
