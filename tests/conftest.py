"""Shared test setup: one torch thread, seeded RNGs, fixture paths."""

import os
import random
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from flow2gan.runtime import usable_cores  # noqa: E402

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"
# Command-line flags that load the tiny parity checkpoint (24 kHz, 100 bands) on the CPU.
TINY_MODEL_ARGS = [
    "--checkpoint",
    str(PARITY / "tiny_24k.pt"),
    "--model-name",
    str(PARITY / "tiny_24k_config.json"),
    "--device",
    "cpu",
]
REPO = Path(__file__).parent.parent


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without the plugin (-p no:xdist) it is skipped
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one test worker per usable core, at most 4.

    The affinity mask, not ``os.cpu_count()``, so a 2-core container on a large host runs 2 workers; each
    worker keeps the one torch thread set above.
    """
    return max(1, min(4, usable_cores()))


# The two longest modules (the mini recipe end to end, the training runs of test_learning.py) run
# first, so that under xdist neither is left running alone on one worker at the end of the suite.
LONGEST_FIRST = ("test_recipes.py", "test_learning.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves the modules of ``LONGEST_FIRST`` to the front; every module's tests stay together, in order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def codec_dir(tmp_path_factory) -> Path:
    """A randomly initialised 24 kHz EnCodec (narrow, same hop/codebooks) saved with ``save_pretrained``.

    transformers initialises codebooks to zeros; each codebook here is drawn from the residuals of the
    encoder's outputs for noise (a k-means-style init), so the codes vary with the audio.
    """
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(1234)
    model = EncodecModel(EncodecConfig(num_filters=4, num_lstm_layers=1)).eval()
    with torch.no_grad():
        residual = model.encoder(0.1 * torch.randn(1, 1, 1040 * 320))[0].T
        for layer in model.quantizer.layers:
            layer.codebook.embed.copy_(residual[torch.randperm(residual.shape[0])[:1024]])
            residual = residual - layer.codebook.decode(layer.codebook.encode(residual))
    path = tmp_path_factory.mktemp("codec")
    model.save_pretrained(path)
    return path
