"""What the training loop reports: sample-weighted loss totals, TensorBoard samples, and debug hooks."""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class MetricTotals:
    """Sample-weighted sums of named losses: ``add`` per batch, ``means`` for logging."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, Tensor | float], batch_size: int) -> None:
        """Accumulate ``value * batch_size`` for every metric."""
        for name, value in metrics.items():
            self.sums[name] += float(value) * batch_size
            self.counts[name] += batch_size

    def means(self) -> dict[str, float]:
        """Per-utterance averages."""
        return {name: self.sums[name] / self.counts[name] for name in self.sums if self.counts[name]}

    def as_tensor(self, names: list[str], device: torch.device) -> Tensor:
        """(2, n) tensor of sums and counts, for an all-reduce."""
        return torch.tensor([[self.sums[n] for n in names], [self.counts[n] for n in names]], device=device)


def format_metrics(metrics: dict[str, float]) -> str:
    """``name=value`` pairs for the text log."""
    return ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def spectrogram_figure(audio: Tensor, title: str):  # -> matplotlib Figure
    """A dB spectrogram (STFT 1024/256, dB re max) of (T,) audio as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = torch.hann_window(1024)
    mag = torch.stft(audio.float().cpu(), 1024, 256, window=window, return_complex=True).abs()
    db = 20 * torch.log10(torch.clamp(mag, min=1e-5) / mag.max().clamp(min=1e-5))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.imshow(db.numpy(), origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma")
    ax.set_title(title)
    ax.set_xlabel("frame")
    ax.set_ylabel("bin")
    fig.tight_layout()
    return fig


def log_test_samples(
    writer, samples: dict[str, Tensor], audio: Tensor, lens: Tensor, sampling_rate: int, step: int
) -> None:
    """Audio and spectrograms of the test batch: ``valid/test_audio_{i}_gt`` and ``..._step_{n}``."""
    import matplotlib.pyplot as plt

    for i, length in enumerate(lens.tolist()):
        clips = {"gt": audio[i, :length], **{label: wav[i, :length] for label, wav in samples.items()}}
        for label, clip in clips.items():
            tag = f"valid/test_audio_{i}_{label}"
            writer.add_audio(tag, clip.float().cpu().unsqueeze(0), step, sample_rate=sampling_rate)
            fig = spectrogram_figure(clip, tag)
            writer.add_figure(f"{tag}_spec", fig, step)
            plt.close(fig)


def add_inf_check_hooks(model: nn.Module) -> None:
    """Warn, naming the module or parameter, on any non-finite forward output or gradient."""

    def check(name: str, kind: str, value: object) -> None:
        tensors = value if isinstance(value, tuple | list) else (value,)
        for tensor in tensors:
            if isinstance(tensor, Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                logger.warning("inf-check: non-finite %s in %s", kind, name or "<model>")

    for name, module in model.named_modules():
        module.register_forward_hook(lambda _m, _i, out, name=name: check(name, "output", out))
        module.register_full_backward_hook(lambda _m, _gi, go, name=name: check(name, "output gradient", go))
    for name, param in model.named_parameters():
        param.register_hook(lambda grad, name=name: check(name, "parameter gradient", grad))


class Diagnostics:
    """``--print-diagnostics``: per-module output statistics and per-parameter gradient norms over batches."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.seen = 0
        self.outputs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, float("inf"), float("-inf"), 0])
        self.grad_rms: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for name, module in model.named_modules():
            if name:
                module.register_forward_hook(lambda _m, _i, out, name=name: self._record(name, out))
        for name, param in model.named_parameters():
            param.register_hook(lambda grad, name=name: self._record_grad(name, grad))

    def batches(self, new: int) -> int:
        """Count ``new`` more training batches; returns the total so far."""
        self.seen += new
        return self.seen

    def _record(self, name: str, out: object) -> None:
        """Accumulate |x| mean, RMS, min and max of a module's (first) tensor output."""
        tensor = out[0] if isinstance(out, tuple | list) and out else out
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            return
        x = tensor.detach().float()
        stats = self.outputs[name]
        stats[0] += x.abs().mean().item()
        stats[1] += x.pow(2).mean().sqrt().item()
        stats[2] = min(stats[2], x.min().item())
        stats[3] = max(stats[3], x.max().item())
        stats[4] += 1

    def _record_grad(self, name: str, grad: Tensor) -> None:
        """Accumulate the RMS of a parameter gradient."""
        stats = self.grad_rms[name]
        stats[0] += grad.detach().float().pow(2).mean().sqrt().item()
        stats[1] += 1

    def report(self) -> str:
        """A text table of the collected statistics and the current gradient/parameter RMS."""
        lines = ["module output: mean|x| rms min max"]
        for name, (abs_sum, rms_sum, lo, hi, n) in self.outputs.items():
            lines.append(f"{name}: {abs_sum / n:.4g} {rms_sum / n:.4g} {lo:.4g} {hi:.4g}")
        lines.append("parameter: rms mean-grad-rms")
        for name, param in self.model.named_parameters():
            total, n = self.grad_rms[name]
            grad = f"{total / n:.4g}" if n else "none"
            lines.append(f"{name}: {param.detach().float().pow(2).mean().sqrt().item():.4g} {grad}")
        return "\n".join(lines)
