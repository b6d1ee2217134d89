"""Training: data, optimizer and schedule, averaging, checkpoints, stages and the shared loop.

Needs the ``train`` extra (``pip install 'flow2gan[train]'``); inference never imports this package.

Raises:
    ImportError: naming the missing packages and the install command, when the extra is absent.
"""

from __future__ import annotations

from importlib.util import find_spec

_TRAIN_EXTRA = ("lhotse", "tensorboard", "matplotlib")

if _missing := [name for name in _TRAIN_EXTRA if find_spec(name) is None]:
    raise ImportError(
        f"flow2gan training needs packages that are not installed ({', '.join(_missing)}): "
        "pip install 'flow2gan[train]' (or run ./install.sh)"
    )
