"""Token-model training: generators whose code vectors come from the codec, and codes made on the fly.

Codes are computed from each training batch by the frozen EnCodec, after the audio pipeline's random
crop and gain, rather than precomputed: precomputed codes would freeze one crop and one gain per file
(EnCodec 24 kHz does not normalise its input, so the codes depend on the gain), need a preparation
stage and storage per bandwidth, and the frozen encoder costs far less than the generator's
multi-step GAN pass it feeds. The bandwidth is drawn per batch, uniformly from the model's
bandwidths, with Python's ``random`` (seeded per epoch identically on every rank, so DDP ranks agree),
as Vocos does for its EnCodec model; validation batches draw theirs the same way.
"""

from __future__ import annotations

import functools
import logging

from flow2gan.codec import EncodecTokenizer
from flow2gan.config import GeneratorConfig, TokenGeneratorConfig
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import TokenAudioGenerator, build_generator

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def load_tokenizer(source: str) -> EncodecTokenizer:
    """The codec of ``--codec`` (hub name or local folder), loaded once per process."""
    return EncodecTokenizer(source)


def check_codec(config: GeneratorConfig, codec: str | None) -> None:
    """``ValueError`` when a token model's ``config`` has no ``codec`` or a mel model's has one."""
    if isinstance(config, TokenGeneratorConfig) and codec is None:
        raise ValueError(
            "a token-conditioned model needs --codec (a hub name such as facebook/encodec_24khz, "
            "or a folder written by EncodecModel.save_pretrained)"
        )
    if not isinstance(config, TokenGeneratorConfig) and codec is not None:
        raise ValueError(f"--codec {codec} is only for token-conditioned models (encodec_24k_*)")


def make_generator(config: GeneratorConfig, codec: str | None) -> MelAudioGenerator:
    """The generator to train; a token model gets its code vectors from ``codec``.

    Raises ``ValueError`` when a token model has no ``codec`` or a mel model has one.
    """
    check_codec(config, codec)
    generator = build_generator(config)
    if isinstance(generator, TokenAudioGenerator):
        generator.code_embedding.load_codebooks(load_tokenizer(codec).codebooks())
    return generator
