"""Training progress: batch counts and ETAs as log lines when stderr is not a terminal."""

import io
import logging

from flow2gan.training.progress import TrainingProgress, format_duration


def test_log_lines_without_a_terminal(caplog):
    progress = TrainingProgress(start_epoch=2, num_epochs=3, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="flow2gan.training.progress"):
        for epoch in (2, 3):
            assert list(progress.epoch(epoch, range(20), total=20)) == list(range(20))
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("epoch 2/3: " in line for line in lines) == 10  # every tenth of the epoch
    assert "epoch 2/3: 4/20 batches (20%)" in lines[1]
    assert "epoch ETA" in lines[1] and "overall ETA" in lines[1]
    assert lines[10].startswith("epoch 2/3 done: 20 batches in") and "overall 1/2 epochs" in lines[10]
    assert lines[-1].startswith("epoch 3/3 done") and "overall 2/2 epochs, ETA 0s" in lines[-1]
    assert "\r" not in "".join(lines)


def test_disabled_progress_passes_batches_through(caplog):
    progress = TrainingProgress(start_epoch=1, num_epochs=1, enabled=False, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="flow2gan.training.progress"):
        assert list(progress.epoch(1, "abc", total=3)) == ["a", "b", "c"]
    assert not caplog.records


def test_format_duration():
    assert [format_duration(s) for s in (5.4, 185, 3725, float("nan"))] == ["5s", "3m05s", "1h02m", "?"]
