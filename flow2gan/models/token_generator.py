"""Token-conditioned Flow2GAN: the mel generator's branches and decoders driven by EnCodec codes.

The only difference from :class:`MelAudioGenerator` is the condition front-end, :class:`CodeEmbedding`
(the setting of Vocos's EnCodec features, which the paper compares against): each used codebook's
code vectors, looked up from the codec's quantiser (frozen, stored in this model's state dict so
codes -> audio needs no codec), summed over codebooks, plus a learned per-bandwidth embedding, so one
model serves every bandwidth. The result (B, codebook_dim, F) takes the place of the log-mel: the
condition encoder, the branches, the sampler and the losses are the mel model's.

The bandwidth is implied by the number of codebooks (2 / 4 / 8 / 16 for 1.5 / 3 / 6 / 12 kbps), so
a code tensor alone is a complete condition for the sampler, the GAN stage and chunked inference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flow2gan.codec import AudioToCodes, EncodecTokenizer
from flow2gan.config import GeneratorConfig, TokenGeneratorConfig
from flow2gan.features import mel_frontend
from flow2gan.models.generator import MelAudioGenerator


class CodeEmbedding(nn.Module):
    """Codes (B, n_q, F) -> summed frozen code vectors + bandwidth embedding (B, codebook_dim, F).

    Buffer ``codebooks`` (max_codebooks, codebook_size, codebook_dim) holds the codec's quantiser
    vectors (zeros until :meth:`load_codebooks`) and ``codebook_scale`` their RMS: the summed vectors are
    divided by it, so the condition has about unit scale whatever the codec's latent scale (a random
    codec's is ~1e-2, which the condition encoder's first BiasNorm bias would swamp);
    ``bandwidth_embed`` has one learned row per bandwidth.
    """

    def __init__(self, config: TokenGeneratorConfig) -> None:
        super().__init__()
        self.bandwidths = config.bandwidths
        n_max, size, dim = config.max_codebooks, config.codebook_size, config.codebook_dim
        self.codebook_size = size
        self.register_buffer("codebooks", torch.zeros(n_max, size, dim))
        self.register_buffer("codebook_scale", torch.ones(()))
        self.register_buffer(
            "n_codebooks",
            torch.tensor([config.n_codebooks(b) for b in config.bandwidths]),
            persistent=False,
        )
        self.bandwidth_embed = nn.Embedding(len(config.bandwidths), dim)

    @torch.no_grad()
    def load_codebooks(self, codebooks: Tensor) -> None:
        """Copy the codec's first ``max_codebooks`` codebooks (n, size, dim), set ``codebook_scale`` to
        their RMS and re-draw the bandwidth embedding N(0, 1), the scale of a normalised code vector.
        """
        if codebooks.dim() != 3 or codebooks.shape[1:] != self.codebooks.shape[1:]:
            raise ValueError(
                f"codebooks must have shape (n, {self.codebooks.shape[1]}, {self.codebooks.shape[2]}), "
                f"got {tuple(codebooks.shape)}"
            )
        n = self.codebooks.shape[0]
        if codebooks.shape[0] < n:
            raise ValueError(f"the codec has {codebooks.shape[0]} codebooks, this model needs {n}")
        self.codebooks.copy_(codebooks[:n])
        rms = self.codebooks.square().mean().sqrt()
        self.codebook_scale.copy_(torch.where(rms > 0, rms, torch.ones_like(rms)))
        nn.init.normal_(self.bandwidth_embed.weight)

    def forward(self, codes: Tensor) -> Tensor:
        """(B, n_q, F) int64 with n_q one of the bandwidths' codebook counts -> (B, codebook_dim, F).

        Written without data-dependent Python control flow so that it exports to ONNX.
        """
        n_q = codes.shape[1]
        flat = self.codebooks[:n_q].reshape(-1, self.codebooks.shape[-1])  # (n_q * size, dim)
        offsets = torch.arange(n_q, device=codes.device).unsqueeze(-1) * self.codebook_size
        vectors = nn.functional.embedding(codes + offsets, flat).sum(dim=1) / self.codebook_scale
        which = (self.n_codebooks == n_q).to(vectors.dtype)  # one-hot over bandwidths
        return (vectors + which @ self.bandwidth_embed.weight).transpose(1, 2)


class TokenAudioGenerator(MelAudioGenerator):
    """Flow2GAN generator conditioned on EnCodec codes: (B, n_q, F) int64 -> waveform (B, F * 320).

    State dict: the mel generator's entries (same names) plus ``code_embedding.codebooks``,
    ``code_embedding.codebook_scale`` and ``code_embedding.bandwidth_embed.weight``.
    """

    config: TokenGeneratorConfig

    def __init__(self, config: TokenGeneratorConfig) -> None:
        if not isinstance(config, TokenGeneratorConfig):
            raise TypeError(f"TokenAudioGenerator needs a TokenGeneratorConfig, got {type(config).__name__}")
        super().__init__(config)
        self.code_embedding = CodeEmbedding(config)

    def supported_codebooks(self) -> dict[int, float]:
        """Codebook count -> bandwidth (kbps) for every bandwidth the model serves."""
        return {self.config.n_codebooks(b): b for b in self.config.bandwidths}

    def check_cond(self, codes: Tensor, bandwidth: float | None = None) -> Tensor:
        """Validate codes (B, n_q, F) or (n_q, F); returns (B, n_q, F) int64 or raises ``ValueError``.

        Rejected: a non-integer tensor or one of another rank, a codebook count that is not one of
        the model's bandwidths (or does not match ``bandwidth`` kbps when given), an index outside
        ``[0, codebook_size)``, fewer frames than the generator needs.
        """
        cfg = self.config
        supported = self.supported_codebooks()
        if bandwidth is not None:
            if float(bandwidth) not in cfg.bandwidths:
                raise ValueError(
                    f"unsupported bandwidth {bandwidth!r} kbps; this model serves {list(cfg.bandwidths)}"
                )
        if not isinstance(codes, Tensor):
            raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3:
            raise ValueError(
                f"codes must have shape (B, n_q, frames) or (n_q, frames), got {tuple(codes.shape)}"
            )
        n_q = codes.shape[1]
        if n_q not in supported:
            raise ValueError(
                f"codes have {n_q} codebooks; this model takes {sorted(supported)} "
                f"(for {list(supported.values())} kbps)"
            )
        if bandwidth is not None and supported[n_q] != float(bandwidth):
            raise ValueError(
                f"bandwidth {bandwidth} kbps uses {cfg.n_codebooks(float(bandwidth))} codebooks, "
                f"the codes have {n_q}"
            )
        if codes.shape[-1] < cfg.min_mel_frames:
            raise ValueError(
                f"codes have {codes.shape[-1]} frames, the generator needs at least {cfg.min_mel_frames}"
            )
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= cfg.codebook_size:
            bad = low if low < 0 else high
            raise ValueError(f"codebook index {bad} out of range [0, {cfg.codebook_size})")
        return codes.long()

    def encode_cond(self, cond: Tensor, check: bool = True) -> Tensor:
        """Codes (B, n_q, F) -> encoded condition (B, E, F); ``check=False`` skips validation."""
        if check:
            cond = self.check_cond(cond)
        emb = self.code_embedding(cond)
        return emb if self.cond_encoder is None else self.cond_encoder(emb)

    def infer(
        self,
        cond: Tensor,
        audio_lens: Tensor | None = None,
        n_timesteps: int | None = None,
        clamp_pred: bool = False,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        bandwidth: float | None = None,
    ) -> Tensor:
        """Codes (B, n_q, F) -> waveform (B, F * 320) (or max(audio_lens)); see ``MelAudioGenerator.infer``.

        ``bandwidth`` (kbps), when given, must be one the model serves and match the codebook count.
        """
        codes = self.check_cond(cond, bandwidth)
        return super().infer(codes, audio_lens, n_timesteps, clamp_pred, noise, generator)

    def infer_chunked(
        self,
        cond: Tensor,
        chunk_size: int,
        n_timesteps: int | None = None,
        clamp_pred: bool = False,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        bandwidth: float | None = None,
    ) -> Tensor:
        """:meth:`infer` ``chunk_size`` code frames at a time, equal to it (exact context, no lengths)."""
        codes = self.check_cond(cond, bandwidth)
        return super().infer_chunked(codes, chunk_size, n_timesteps, clamp_pred, noise, generator)


def build_generator(config: GeneratorConfig) -> MelAudioGenerator:
    """The generator class a config describes: token-conditioned for a ``TokenGeneratorConfig``, else mel."""
    if isinstance(config, TokenGeneratorConfig):
        return TokenAudioGenerator(config)
    return MelAudioGenerator(config)


def audio_front_end(
    model: MelAudioGenerator, codec: EncodecTokenizer | None = None, bandwidth: float | None = None
) -> nn.Module:
    """Audio (B, T) -> the model's condition: its log-mel, or for a token model codes from ``codec``.

    Codes are made at ``bandwidth`` kbps, or (None) at one drawn per call from the model's
    bandwidths (training). ``ValueError``: a token model without a codec or with one whose code
    vectors are not the model's, a bandwidth the model does not serve, a codec for a mel model.
    """
    cfg = model.config
    if not isinstance(model, TokenAudioGenerator):
        if codec is not None:
            raise ValueError("a codec is only for token-conditioned models (encodec_24k_*)")
        return mel_frontend(cfg)
    if codec is None:
        raise ValueError(
            "a token-conditioned model needs a codec to turn audio into codes (--codec: a hub name "
            "such as facebook/encodec_24khz, or a folder written by EncodecModel.save_pretrained)"
        )
    if bandwidth is not None and float(bandwidth) not in cfg.bandwidths:
        raise ValueError(
            f"unsupported bandwidth {bandwidth!r} kbps; this model serves {list(cfg.bandwidths)}"
        )
    bandwidths = cfg.bandwidths if bandwidth is None else (float(bandwidth),)
    return AudioToCodes(codec, bandwidths, model.code_embedding.codebooks)
