"""Progress off a terminal: plain lines at each tenth of a task, so a long run sent to a file
is not silent until it ends."""

from __future__ import annotations

import io

from rich.console import Console

from common.cli.support import LineProgress, progress


def _file_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_output_to_a_file_gets_a_line_per_tenth() -> None:
    output, buffer = _file_console()
    with progress(output) as bar:
        assert isinstance(bar, LineProgress)
        task = bar.add_task("training gan", total=20)
        for step in range(1, 21):
            bar.update(task, completed=step)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "training gan: started"
    # 20 steps, a line at every 2nd: 2/20, 4/20, ..., 20/20
    assert [line.split(" (")[0] for line in lines[1:]] == [
        f"training gan: {step}/20" for step in range(2, 21, 2)
    ]


def test_advance_and_a_total_set_later_are_reported() -> None:
    output, buffer = _file_console()
    with progress(output) as bar:
        task = bar.add_task("preparing cases", total=None)
        bar.advance(task)  # no total yet: nothing to report
        bar.update(task, total=3, completed=3)
    lines = buffer.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "preparing cases: started",
        "preparing cases: 3/3",
    ]


def test_a_terminal_gets_the_bar() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    bar = progress(terminal)
    assert not isinstance(bar, LineProgress)
