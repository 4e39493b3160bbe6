"""Study progress: plain log lines off a terminal, rich bars on one, nothing when quiet; runs are
counted when their group ends, early-stopped or not; concurrent (Ray) groups get their own bars."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

import regulab
from regulab.study import api

# one stacked group of 2 runs that both stop early (patience 0, an improvement threshold no epoch
# meets): the run count must advance when the group ends, not when it reaches the last epoch
SPEC = {"epochs": 4, "seeds": 2, "checkpoint_every": 0.0, "dataset": {"name": "digits", "n_train": 120},
        "model": {"kind": "mlp", "widths": [8]}, "arms": {"es": {"early_stopping": {"patience": 0, "min_delta": 5.0}}}}


def _stopped_early(res) -> bool:
    return all(f["stopped_epoch"] < SPEC["epochs"] for f in res.finals)


def test_plain_lines_off_a_terminal(tmp_path, capsys):
    assert _stopped_early(regulab.Study(SPEC, out=tmp_path / "s").run())
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "regulab study: 2 runs, 0 already done"
    assert lines[1].startswith("regulab study: group of 2 runs stacked, epoch 1/4 (")
    assert lines[-1] == "regulab study: 2/2 runs done"
    regulab.Study(SPEC, out=tmp_path / "s").run()  # everything finished: nothing to train
    assert capsys.readouterr().err.strip().splitlines() == ["regulab study: 2 runs, 2 already done"]


def test_quiet_prints_nothing(tmp_path, capsys):
    regulab.Study(SPEC, out=tmp_path / "s", quiet=True).run()
    assert capsys.readouterr().err == ""


def test_rich_bars_on_a_terminal(tmp_path, monkeypatch, capsys):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    real = api._Progress
    monkeypatch.setattr(api, "_Progress", lambda *a, **k: real(*a, **k, console=console))
    assert _stopped_early(regulab.Study(SPEC, out=tmp_path / "s").run())
    text = buf.getvalue()
    assert "runs" in text and "2/2" in text and "epochs (2 runs stacked)" in text
    assert capsys.readouterr().err == ""  # the bars, not the plain lines


@pytest.mark.parametrize("rich", [False, True])
def test_concurrent_groups_get_their_own_epochs(rich, capsys):
    g1 = SimpleNamespace(key="ga", runs=[1, 2, 3], stacked=True)
    g2 = SimpleNamespace(key="gb", runs=[4], stacked=False)
    console = Console(file=io.StringIO(), force_terminal=True, width=120) if rich else None
    with api._Progress(False, 4, 0, 5, concurrent=True, console=console) as prog:
        e1, e2 = prog.for_group(g1), prog.for_group(g2)
        e1(1, 0.1)
        e2(1, 0.1)
        if rich:
            assert set(prog.group_bars) == {"ga", "gb"} and prog.t_epochs is None
            assert [prog.bar.tasks[i].completed for i in prog.group_bars.values()] == [1, 1]
        e1(5, 0.1)
        prog.group_done(g1)
        if rich:
            assert set(prog.group_bars) == {"gb"} and prog.bar.tasks[prog.t_runs].completed == 3
        prog.group_done(g2)
    err = capsys.readouterr().err
    if rich:
        assert prog.group_bars == {} and err == ""
    else:
        assert "regulab study: group ga of 3 runs stacked, epoch 1/5" in err
        assert "regulab study: group gb of 1 run, epoch 1/5" in err
        assert err.strip().splitlines()[-1] == "regulab study: 4/4 runs done"
