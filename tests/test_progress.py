"""Progress: a live tqdm bar on a terminal, plain timed lines anywhere else."""

from __future__ import annotations

import io
import re

import pytest
from tqdm.auto import tqdm

from ssae_core import progress as prog
from ssae_core.errors import InputError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.delenv(prog.MODE_ENV, raising=False)


def test_a_terminal_gets_a_live_tqdm_bar():
    stream = Terminal()
    bar = prog.show_progress(total=3, desc="embed", unit="text", file=stream)
    assert isinstance(bar, tqdm)
    with bar:
        bar.update(3)
    assert "\r" in stream.getvalue() and "3/3" in stream.getvalue()


def test_a_log_gets_one_plain_line_every_interval_and_one_at_the_end():
    stream, clock = io.StringIO(), Clock()
    bar = prog.LineProgress(
        total=100, desc="embed", unit="text", interval=10, file=stream, clock=clock
    )
    with bar:
        for _ in range(100):
            clock.now += 0.5  # 2 texts per second: 50 s in all
            bar.update(1)
            if bar.n == 40:
                bar.set_postfix_str("shard 2/5")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 5 + 1  # at 10, 20, 30, 40, 50 s, and the closing line
    assert lines[0] == "embed: 20/100 text (20%), 2 text/s, 0:40 left"
    assert lines[3] == "embed: 80/100 text (80%), 2 text/s, 0:10 left, shard 2/5"
    assert lines[-1] == "embed: 100/100 text (100%), 2 text/s, 0:50 in all, shard 2/5"
    assert max(len(line) for line in lines) < 100


def test_show_progress_picks_lines_for_a_stream_that_is_no_terminal():
    stream = io.StringIO()
    bar = prog.show_progress(range(5), desc="language", unit="condition", file=stream)
    assert isinstance(bar, prog.LineProgress)
    assert list(bar) == [0, 1, 2, 3, 4]  # iteration closes it: one final line
    assert re.fullmatch(r"language: 5/5 condition \(100%\), .* in all\n", stream.getvalue())


def test_training_style_use_with_initial_and_postfix():
    stream, clock = io.StringIO(), Clock()
    bar = prog.LineProgress(
        range(3, 10),
        total=10,
        initial=3,
        desc="train",
        unit="epoch",
        interval=10,
        file=stream,
        clock=clock,
    )
    for epoch in bar:
        clock.now += 4.0
        bar.set_postfix(val_loss="0.1234", l1="0.500")
        if epoch == 6:
            break
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "train: 6/10 epoch (60%), 0.25 epoch/s, 0:16 left, val_loss=0.1234, l1=0.500"
    )
    # like tqdm, an item counts once its loop body is done: epoch 6 broke off, so 3 epochs in 16 s
    assert lines[-1].startswith("train: 6/10 epoch (60%), 0.188 epoch/s, 0:16 in all")
    assert len(lines) == 2


def test_disabled_or_idle_progress_writes_nothing():
    stream = io.StringIO()
    with prog.LineProgress(total=5, unit="text", disable=True, file=stream, interval=0) as bar:
        bar.update(5)
    with prog.LineProgress(total=5, unit="text", file=stream):
        pass
    assert stream.getvalue() == ""


def test_the_environment_forces_either_mode(monkeypatch):
    monkeypatch.setenv(prog.MODE_ENV, "lines")
    assert isinstance(prog.show_progress(total=1, unit="text", file=Terminal()), prog.LineProgress)
    monkeypatch.setenv(prog.MODE_ENV, "bar")
    bar = prog.show_progress(total=1, unit="text", file=io.StringIO())
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv(prog.MODE_ENV, "sometimes")
    with pytest.raises(InputError, match="SSAE_PROGRESS"):
        prog.show_progress(total=1, unit="text")


def test_messages_go_to_the_stream_on_their_own_line():
    stream = io.StringIO()
    prog.show_message("loading model", file=stream)
    assert stream.getvalue() == "loading model\n"


def test_no_module_of_the_package_uses_tqdm_directly():
    from pathlib import Path

    package = Path(prog.__file__).parent
    users = [
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if "tqdm" in p.read_text() and p.name != "progress.py"
    ]
    assert users == []


def test_every_progress_bar_names_its_unit():
    """Every call of show_progress, LineProgress or tqdm in the package, its stages and tools
    passes unit=...: tqdm's default "it" would mean steps in one bar and epochs in another."""
    import ast
    from pathlib import Path

    root = Path(prog.__file__).parent.parent
    files = [p for d in ("ssae_core", "stages", "tools") for p in (root / d).rglob("*.py")]
    calls, unnamed = 0, []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("show_progress", "LineProgress", "tqdm"):
                calls += 1
                if not any(k.arg == "unit" for k in node.keywords):
                    unnamed.append(f"{path.relative_to(root)}:{node.lineno}")
    assert calls >= 5 and unnamed == []
