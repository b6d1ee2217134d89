"""Deliberate oddities kept only so that the reference implementation's scripts and files keep working.

flow2gan itself needs none of them; they are gathered here so that each is visibly deliberate:

* ``python -m flow2gan.bin.train``: the reference's name of the pre-training script, an alias of
  :mod:`flow2gan.bin.pretrain` (``flow2gan/bin/train.py``).
* ``from flow2gan.models.modules import LogMelSpectrogram``: the reference's home of the mel front-end
  (it lives in :mod:`flow2gan.features`; :func:`flow2gan.features.mel_frontend` builds it from a config).
* ``infer_dir --input-type audio|mel``: accepted and ignored, inputs are chosen by suffix (the reference
  also reads both suffixes whatever the flag says): :func:`add_input_type_option`.
* ``"sampler": None`` in every training checkpoint, where the reference stores its unused data-sampler
  state: :data:`CHECKPOINT_PLACEHOLDERS`.
* ``cfg["n_mels"]`` item access on configs (``GeneratorConfig.__getitem__``) and
  ``MelAudioGenerator(**config_dict)``: reference scripts treat the config as a dict.
* Boolean flags accept ``yes/true/t/y/1`` and ``no/false/f/n/0`` (:func:`flow2gan.cli.str2bool`),
  and the literal ``None`` means "not given" (:func:`flow2gan.cli.optional_str`).
"""

from __future__ import annotations

import argparse

CHECKPOINT_PLACEHOLDERS: dict[str, None] = {"sampler": None}


def add_input_type_option(parser: argparse.ArgumentParser) -> None:
    """``--input-type audio|mel``: accepted for the reference tool's command lines, not used."""
    parser.add_argument(
        "--input-type",
        choices=("audio", "mel"),
        default="audio",
        help="accepted for compatibility with the reference tool; inputs are chosen by suffix",
    )
