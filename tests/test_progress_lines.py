"""Progress that slow hardware and log files can read: s/it, ETA, plain lines off a terminal.

A clock is injected instead of sleeping: one step "takes" 45 s, longer than the 30 s window
rich estimates its speed over, which left the speed and ETA columns empty before.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from lorakit.models import file_hashes
from lorakit.progress import Board, rate, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=160), out


def test_rate_switches_to_seconds_per_item_below_one_per_second() -> None:
    assert rate(10, 4.0) == "2.50 it/s"
    assert rate(1, 45.0) == "45.0 s/it"
    assert rate(3, 1.5, "MiB") == "2.00 MiB/s"
    assert rate(0, 10.0) == "-"


def test_plain_lines_show_seconds_per_step_and_eta_for_a_slow_step() -> None:
    clock = FakeClock()
    console, out = _console(terminal=False)
    with Board(console, clock=clock) as board:
        task = board.add_task("epoch 1/1", total=20, loss="-")
        clock.now += 45
        board.update(task, loss="0.1234")  # a field alone prints nothing
        assert out.getvalue() == ""
        board.advance(task)
    assert out.getvalue().splitlines() == [
        "epoch 1/1: 1/20 (5%), loss 0.1234, 45.0 s/it, elapsed 0:45, ETA 14:15"
    ]


def test_terminal_bar_shows_seconds_per_step_and_eta_for_a_slow_step() -> None:
    clock = FakeClock()
    console, out = _console(terminal=True)
    board = Board(console, clock=clock)
    board.start()
    task = board.add_task("epoch 1/1", total=20, loss="0.5")
    clock.now += 45
    board.advance(task)
    board.refresh()
    board.stop()
    shown = out.getvalue()
    assert "1/20" in shown and "45.0 s/it" in shown and "ETA 14:15" in shown


def test_plain_lines_every_interval_and_the_last_one_when_removed() -> None:
    clock = FakeClock()
    console, out = _console(terminal=False)
    with Board(console, clock=clock, marks=0, interval=30) as board:
        task = board.add_task("caching latents", total=7)
        for _ in range(7):
            clock.now += 10
            board.advance(task)
        board.remove_task(task)
    assert out.getvalue().splitlines() == [
        "caching latents: 3/7 (43%), 10.0 s/it, elapsed 0:30, ETA 0:40",
        "caching latents: 6/7 (86%), 10.0 s/it, elapsed 1:00, ETA 0:10",
        "caching latents: 7/7 (100%), 10.0 s/it, elapsed 1:10",
    ]


def test_a_resumed_run_counts_speed_from_where_it_started() -> None:
    clock = FakeClock()
    console, out = _console(terminal=False)
    with Board(console, clock=clock, interval=30) as board:
        task = board.add_task("epoch 3/4", total=100, completed=50)
        clock.now += 60
        board.advance(task, 2)
    assert "52/100 (52%), 30.0 s/it, elapsed 1:00, ETA 24:00" in out.getvalue()


def test_quick_loops_stay_silent_off_a_terminal(capsys) -> None:
    assert list(track([1, 2, 3], "Checking images")) == [1, 2, 3]
    assert capsys.readouterr().err == ""


def test_hashing_reports_to_the_board_that_is_showing(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(bytes(3 * 1024 * 1024))
    console, out = _console(terminal=False)
    with Board(console):
        hashes = file_hashes(path)
    assert len(hashes["sha256"]) == 64
    lines = out.getvalue().splitlines()
    assert lines and lines[-1].startswith("hashing model.safetensors: 3/3 MiB (100%)")
