"""EnCodec front-end of the token model: 24 kHz audio -> discrete codes, and EnCodec's own decoder.

Built on ``transformers``' ``EncodecModel`` (Apache-2.0; ``pip install flow2gan[codec]``). The 24 kHz
EnCodec codes audio at 75 frames/s (hop 320) with residual vector quantisation over codebooks of 1024
entries (10 bits): ``bandwidth`` kbps uses ``n_q = bandwidth * 1000 / (75 * 10)`` codebooks, i.e.
1.5 / 3 / 6 / 12 kbps -> 2 / 4 / 8 / 16 codebooks. Residual quantisation is sequential, so the codes at a
lower bandwidth are the first ``n_q`` rows of the codes at a higher one (:meth:`EncodecTokenizer.encode`
at 12 kbps then slicing equals encoding at the lower bandwidth).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DEFAULT_CODEC = "facebook/encodec_24khz"
BANDWIDTHS: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0)


def n_codebooks(bandwidth: float, frame_rate: int = 75, codebook_size: int = 1024) -> int:
    """Codebooks used at ``bandwidth`` kbps: ``floor(bandwidth * 1000 / (frame_rate * log2(size)))``."""
    return max(1, math.floor(bandwidth * 1000 / (frame_rate * math.log2(codebook_size))))


def check_bandwidth(bandwidth: float, supported: tuple[float, ...] = BANDWIDTHS) -> float:
    """``bandwidth`` as a float if it is one of ``supported`` (kbps), else ``ValueError`` naming them."""
    try:
        value = float(bandwidth)
    except (TypeError, ValueError):
        value = math.nan
    if value not in supported:
        raise ValueError(f"unsupported bandwidth {bandwidth!r} kbps; choose one of {list(supported)}")
    return value


def _load_encodec(source: str | Path) -> nn.Module:
    """``EncodecModel.from_pretrained`` of a hub name, a local folder, or a file inside such a folder."""
    try:
        from transformers import EncodecModel
    except ImportError as exc:
        raise ImportError(
            "the EnCodec front-end needs the 'transformers' package: pip install 'flow2gan[codec]'"
        ) from exc
    path = Path(source)
    if path.is_file():
        path = path.parent
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{source}: no EnCodec config.json in {path} (save_pretrained layout)")
        return EncodecModel.from_pretrained(str(path))
    return EncodecModel.from_pretrained(str(source))


class EncodecTokenizer(nn.Module):
    """A frozen 24 kHz EnCodec: ``encode`` audio (B, T) -> codes (B, n_q, ceil(T / 320)) int64.

    ``source`` is a hub name (downloaded and cached by ``transformers`` when online), a local folder
    written by ``save_pretrained``, or a file inside one. Raises ``ImportError`` without
    ``transformers`` and ``ValueError`` for a codec that is not a mono 24 kHz, hop-320 model.
    """

    def __init__(self, source: str | Path = DEFAULT_CODEC) -> None:
        super().__init__()
        self.source = str(source)
        self.model = _load_encodec(source).eval().requires_grad_(False)
        cfg = self.model.config
        if cfg.sampling_rate != 24000 or cfg.hop_length != 320 or cfg.audio_channels != 1:
            raise ValueError(
                f"{source}: expected a mono 24 kHz EnCodec with hop 320, got {cfg.audio_channels} channel(s) "
                f"at {cfg.sampling_rate} Hz, hop {cfg.hop_length}"
            )
        missing = [b for b in BANDWIDTHS if b not in cfg.target_bandwidths]
        if missing:
            raise ValueError(f"{source}: codec lacks bandwidths {missing} (has {cfg.target_bandwidths})")
        logger.info("loaded EnCodec from %s", source)

    @property
    def sampling_rate(self) -> int:
        """Audio rate in Hz (24000)."""
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        """Samples per code frame (320)."""
        return int(self.model.config.hop_length)

    @property
    def frame_rate(self) -> int:
        """Code frames per second (75)."""
        return int(self.model.config.frame_rate)

    @property
    def codebook_size(self) -> int:
        """Entries per codebook (1024)."""
        return int(self.model.config.codebook_size)

    @property
    def codebook_dim(self) -> int:
        """Width of a code vector (128)."""
        return int(self.model.config.codebook_dim)

    def n_codebooks(self, bandwidth: float) -> int:
        """Codebooks at ``bandwidth`` kbps (2, 4, 8, 16 for 1.5, 3, 6, 12); ``ValueError`` if unsupported."""
        return n_codebooks(check_bandwidth(bandwidth), self.frame_rate, self.codebook_size)

    def codebooks(self, n_q: int | None = None) -> Tensor:
        """The first ``n_q`` (default: 16, the 12 kbps set) codebooks as one float32 (n_q, size, dim) copy."""
        n_q = self.n_codebooks(max(BANDWIDTHS)) if n_q is None else n_q
        layers = self.model.quantizer.layers[:n_q]
        return torch.stack([layer.codebook.embed.detach().float().cpu() for layer in layers])

    @torch.no_grad()
    def encode(self, audio: Tensor, bandwidth: float) -> Tensor:
        """Mono 24 kHz audio (B, T) or (T,) in [-1, 1] -> codes (B, n_q, ceil(T / 320)) int64.

        Raises ``ValueError`` for an unsupported bandwidth or audio of another rank.
        """
        n_q = self.n_codebooks(bandwidth)
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"audio must have shape (B, T) or (T,), got {tuple(audio.shape)}")
        weight = next(self.model.parameters())
        x = audio.to(device=weight.device, dtype=weight.dtype).unsqueeze(1)
        codes = self.model.encode(x, bandwidth=float(bandwidth), return_dict=True).audio_codes
        return codes[0, :, :n_q].long()

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """EnCodec's own decoder (the baseline): codes (B, n_q, F) -> audio (B, F * 320)."""
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape (B, n_q, frames), got {tuple(codes.shape)}")
        weight = next(self.model.parameters())
        audio = self.model.decode(codes.to(weight.device).unsqueeze(0), [None], return_dict=True).audio_values
        return audio[:, 0, : codes.shape[-1] * self.hop_length]


class AudioToCodes(nn.Module):
    """Audio (B, T) -> codes (B, n_q, ceil(T / 320)) int64 from a frozen codec, as a model's front-end.

    One bandwidth: always that one (inference). Several: one is drawn per call with Python's
    ``random`` (training; seeded per epoch identically on every DDP rank). The codec runs in fp32
    outside autocast. ``codebooks`` (n, size, dim), the code vectors stored in a token model, must be
    the codec's own: a ``ValueError`` otherwise, as for an unsupported bandwidth.
    """

    def __init__(
        self, tokenizer: EncodecTokenizer, bandwidths: tuple[float, ...], codebooks: Tensor | None = None
    ) -> None:
        super().__init__()
        if not bandwidths:
            raise ValueError("AudioToCodes needs at least one bandwidth")
        self.bandwidths = tuple(check_bandwidth(b) for b in bandwidths)
        if codebooks is not None:
            stored = codebooks.detach().float().cpu()
            if not torch.allclose(stored, tokenizer.codebooks(stored.shape[0]), rtol=1e-4, atol=1e-6):
                raise ValueError(
                    f"the model's code vectors differ from those of the codec {tokenizer.source}: "
                    "use the codec the model was trained with"
                )
        self.tokenizer = tokenizer

    def forward(self, audio: Tensor) -> Tensor:
        """(B, T) -> (B, n_q, ceil(T / 320)) at the (drawn) bandwidth."""
        bandwidth = self.bandwidths[0] if len(self.bandwidths) == 1 else random.choice(self.bandwidths)
        with torch.autocast(audio.device.type, enabled=False):
            return self.tokenizer.encode(audio.float(), bandwidth)
