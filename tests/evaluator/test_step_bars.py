"""`fedsynth evaluate`'s progress lines: one per step, each finished when the next starts."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from evaluator.cli import StepBars
from evaluator.evaluate import ProgressEvent


def test_each_step_gets_a_line_that_ends_complete() -> None:
    bars = Progress(console=Console(file=io.StringIO()))
    steps = StepBars(bars)
    steps(ProgressEvent("reading the release"))
    for done in (1, 2, 3):
        steps(ProgressEvent("radiomics of every structure", done, 4))
    steps(ProgressEvent("segmentation utility", 5, 10, "real, seed 0"))
    steps(ProgressEvent("segmentation utility", 7, 10, "synthetic, seed 0"))
    tasks = bars.tasks
    assert [t.description for t in tasks] == [
        "reading the release",
        "radiomics of every structure",
        "segmentation utility: synthetic, seed 0",
    ]
    assert [(t.completed, t.total) for t in tasks] == [(1, 1), (4, 4), (7, 10)]
    steps.finish()
    assert (tasks[2].completed, tasks[2].total) == (10, 10)


def test_a_step_without_total_ends_at_its_count() -> None:
    bars = Progress(console=Console(file=io.StringIO()))
    steps = StepBars(bars)
    for done in (0, 1, 2, 3):
        steps(ProgressEvent("checking the real cases", done))
    steps.finish()
    assert [(t.completed, t.total) for t in bars.tasks] == [(3, 3)]
