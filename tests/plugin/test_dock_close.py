"""Closing never aborts: every worker of a dock is stopped or awaited when the dock or the viewer
closes. Twenty real viewers (tests/helpers/close_at_once.py, each in its own process, under the suite's X
server) dock both widgets and close at once, four of them while a propagation runs; and a dock
closed during a run has stopped its worker when it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.docks import docked_propagate

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "close_at_once.py"
RUNS = 20
AT_ONCE = 2  # processes at a time
TIMEOUT = 300  # s per process (napari starts in 5-15 s on a loaded 2-core machine)


def test_docking_both_widgets_and_closing_at_once_exits_cleanly_twenty_times(checkpoint) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    commands = [[sys.executable, str(SCRIPT)] + (["--run", "--checkpoint", str(checkpoint)] if i % 5 == 4 else [])
                for i in range(RUNS)]
    failures = []
    for start in range(0, RUNS, AT_ONCE):
        running = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for command in commands[start:start + AT_ONCE]]
        for i, process in enumerate(running, start=start):
            out, err = process.communicate(timeout=TIMEOUT)
            if process.returncode != 0 or "workers still running: 0" not in out or "has been deleted" in err:
                failures.append(f"run {i} ({' '.join(commands[i][2:]) or 'close at once'}): exit {process.returncode}\n"
                                f"{out[-500:]}\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_closing_the_dock_during_a_run_stops_its_worker(make_napari_viewer, qtbot, checkpoint) -> None:
    viewer, dock, widget = docked_propagate(make_napari_viewer, checkpoint, num_frames=40, seed=6)
    widget.run()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.confidence) >= 2, timeout=60_000)
    viewer.window.remove_dock_widget(dock)  # the dock's close button
    assert not worker.is_running and not widget.workers.live
    assert len(widget.confidence) < 39  # stopped, not run to the end
