"""Stage 1: flow-matching pre-training (``python -m flow2gan.bin.pretrain``, reference flags)."""

from __future__ import annotations

from functools import partial

from flow2gan.training.loop import train
from flow2gan.training.options import (
    FlowMatchingOptions,
    TrainOptions,
    flow_matching_options,
    parse_options,
    pretrain_parser,
)
from flow2gan.training.stages import FlowMatchingStage


def make_stage(opts: TrainOptions, fm: FlowMatchingOptions, fresh_start: bool) -> FlowMatchingStage:
    """Stage factory (module level so spawned DDP processes can unpickle it)."""
    return FlowMatchingStage(opts, fm)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and train."""
    opts, fm = parse_options(pretrain_parser(), argv, flow_matching_options)
    train(opts, partial(make_stage, opts, fm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
