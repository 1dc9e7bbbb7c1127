"""How long the ``agent-session-store`` command spends importing, per command.

``python -X importtime`` reports every import of a fresh interpreter; the sum over the top-level
ones is the command's import time. Each command runs ``--rounds`` times, interleaved, and the
median is printed, with the process's whole run time beside it::

    python -m benchmarks.startup                 # this checkout's installed package
    python -m benchmarks.startup --src OTHER/src # another checkout, e.g. an older commit

``sessions`` runs on an empty SQLite database brought to head first (the usual first look).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def import_seconds(stderr: str) -> float:
    """The total import time in seconds from ``-X importtime`` output (top-level imports)."""
    total_us = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith(" ") and not name.startswith("  "):  # one space: a top-level import
            try:
                total_us += int(cumulative)
            except ValueError:  # the header line
                continue
    return total_us / 1e6


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(import seconds, whole-process seconds) of one ``agent-session-store`` call."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent_session_store", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr[-500:]}")
    return import_seconds(done.stderr), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--src", help="import the package from this src/ folder instead")
    options = parser.parse_args()
    env = dict(os.environ)
    if options.src:
        env["PYTHONPATH"] = str(Path(options.src).resolve())
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'empty.db'}"
        subprocess.run(
            [sys.executable, "-c", "import asyncio, sys; from agent_session_store import migrate; "
             "asyncio.run(migrate.upgrade(sys.argv[1]))", url],
            env=env, check=True, timeout=120,
        )
        commands = {"--version": ["--version"], "sessions": ["sessions", "--url", url]}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(options.rounds):
            for name, args in commands.items():
                figures[name].append(run_once(args, env))
    load = os.getloadavg()
    print(f"rounds: {options.rounds}; load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    print("| command | import time, median (ms) | min-max (ms) | whole process, median (ms) |")
    print("|---|---|---|---|")
    for name, runs in figures.items():
        imports = [i * 1000 for i, _ in runs]
        whole = [w * 1000 for _, w in runs]
        print(f"| `{name}` | {statistics.median(imports):.0f} | {min(imports):.0f}-"
              f"{max(imports):.0f} | {statistics.median(whole):.0f} |")


if __name__ == "__main__":
    main()
