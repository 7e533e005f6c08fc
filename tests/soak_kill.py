"""Kill-at-random soak of a small sweep (not part of the test suite; about 5 minutes).

    PYTHONPATH=$PWD .venv/bin/python tests/soak_kill.py [--kills 24] [--seed 0] [--keep DIR]

The fake backbone of tests/core (every name, computed in a worker subprocess inside a
``uipbench-worker-*`` folder, as RemoteBackbone does) on two tiny systems and ``all``, three backbone
names, two seeds: an uninterrupted run gives the reference and its duration T.  Then, round after round
in a fresh results folder with a fresh embedding cache, the same command is started, killed after a
random delay in [0, 1.1 T] (T re-measured whenever a round's first run finishes unkilled: the
machine's load changes) with SIGTERM or SIGKILL (half each), and started again (the resume), until
a run finishes by itself; its results must equal the reference, value for value (the harness's
reader).  Rounds go on until ``--kills`` runs were killed while alive.

Checked after every run: no process of that run is alive (each run's processes carry a tag in their
environment, found in /proc), a SIGTERM gives exit 143 and one line without a traceback (exit -15 only
when it lands in the interpreter's start-up, before any uipbench code runs), a SIGKILL that
left a lock is taken over by the next run with a warning and never blocks it (no exit 2).  At the end:
no ``uipbench-worker-*`` folder in the runs' temp folder, no lock file, no temporary file of an atomic
write in any results folder, and (reported, not required) temporary files left in the caches.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.core.faults.common import Run, assert_same_results, tiny_datasets  # noqa: E402
from uipbench._interrupt import WORKER_PREFIX  # noqa: E402
from uipbench._lock import LOCK_FILE  # noqa: E402

TAKEN_OVER = "took over the lock of a run that is gone"
INTERRUPTED = "uipbench: interrupted (SIGTERM); finished work is kept; run the same command to resume"
INTERRUPTED_EARLY = "uipbench: interrupted (SIGTERM)"  # before the command line was parsed: no hint yet


def sweep_command(root: Path, out: Path) -> list[str]:
    return ["sweep", "--backbones", "chgnet-0.3.0", "chgnet-0.2.0", "sevennet-0", "--systems", "cu-s", "ag-s", "all",
            "--datasets-root", str(root), "--sizes", "4", "7", "--seeds", "0", "1", "--aggregations", "global",
            "atomic", "--descriptors", "embedding", "--workers", "2", "--out", str(out)]


def _lock_pid(out: Path) -> int | None:
    try:
        return int(json.loads((out / LOCK_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Soak:
    def __init__(self, work: Path, seed: int) -> None:
        self.work, self.rng = work, random.Random(seed)
        self.tmp = work / "tmp"  # TMPDIR of every run: worker folders land here
        self.tmp.mkdir(parents=True)
        self.root = tiny_datasets(work / "datasets")
        self.runs: list[Run] = []
        self.log: list[dict] = []
        self.problems: list[str] = []
        self.whole_run_s = self.last_seconds = 0.0

    def start(self, cache: Path) -> Run:
        run = Run(self.work / f"run{len(self.runs):03d}", FAKE_WORKER="1", FAKE_WORKER_DELAY="0.5",
                  TMPDIR=str(self.tmp), UIPBENCH_CACHE_DIR=str(cache))
        self.runs.append(run)
        return run

    def reference(self) -> tuple[Path, float]:
        out = self.work / "reference"
        t0 = time.monotonic()
        done = self.start(self.work / "cache-reference").run(sweep_command(self.root, out))
        if done.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{done.stderr}")
        self.whole_run_s = time.monotonic() - t0
        return out, self.whole_run_s

    def one(self, out: Path, cache: Path, limit: float | None, stale_before: bool) -> bool:
        """Start (resume) the sweep, kill it at random (``limit`` None: never); True when it finished by itself."""
        signum = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
        delay = self.rng.uniform(0.0, limit) if limit is not None else 3600.0
        run = self.start(cache)
        t0 = time.monotonic()
        done, alive = run.kill_after(sweep_command(self.root, out), delay, signum)
        self.last_seconds = time.monotonic() - t0
        alive_after, _ = run.leftovers(settle=10.0)
        entry = {"signal": signal.Signals(signum).name, "delay_s": round(delay, 2), "killed": alive,
                 "exit": done.returncode, "took_over": TAKEN_OVER in done.stderr, "left_alive": len(alive_after),
                 "lock_left": _lock_pid(out) == run.proc.pid}
        self.log.append(entry)
        where = f"run {len(self.runs) - 1} ({entry['signal']} after {entry['delay_s']} s)"
        if alive_after:
            self.problems.append(f"{where}: processes left alive {alive_after}")
            run.reap()
        if "Traceback" in done.stderr:
            self.problems.append(f"{where}: traceback\n{done.stderr[-2000:]}")
        if done.returncode == 2:
            self.problems.append(f"{where}: refused (exit 2): {done.stderr.strip().splitlines()[-1]}")
        if stale_before and done.returncode == 0 and not entry["took_over"]:
            self.problems.append(f"{where}: a stale lock was there but no take-over warning")
        if alive and signum == signal.SIGTERM:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            if done.returncode == -15:
                entry["before_handler"] = True  # killed during interpreter start-up, before main()
            elif done.returncode != 143 or not (last == INTERRUPTED or last == INTERRUPTED_EARLY):
                self.problems.append(f"{where}: SIGTERM gave exit {done.returncode}, last line {last!r}")
        if not alive and done.returncode != 0:
            self.problems.append(f"{where}: finished with exit {done.returncode}\n{done.stderr[-2000:]}")
        return not alive

    def round(self, index: int, reference: Path, kills_left: int) -> int:
        """Kill and resume in a fresh folder until a run finishes; a first run that finished unkilled
        measured a whole run: the kill window follows it (the machine's load changes)."""
        out, cache = self.work / f"round{index:02d}", self.work / f"cache{index:02d}"
        killed = 0
        limit = 1.1 * self.whole_run_s
        while True:
            stale = (out / LOCK_FILE).exists()
            if self.one(out, cache, limit if killed < kills_left else None, stale):  # enough kills: no more
                if killed == 0:
                    self.whole_run_s = self.last_seconds
                break
            killed += 1
        rows = assert_same_results(out, reference)  # raises on the first differing value
        print(f"round {index}: {killed} kill(s) in [0, {limit:.1f}] s, then identical to the reference ({rows} result "
              f"rows)", flush=True)
        return killed

    def leftovers(self) -> dict[str, int]:
        outs = [p for p in self.work.glob("round*") if p.is_dir()]
        return {
            "processes": sum(len(r.leftovers(settle=0.0)[0]) for r in self.runs),
            "worker_folders": len(list(self.tmp.glob(f"{WORKER_PREFIX}*"))),
            "other_temp_entries": len([p for p in self.tmp.iterdir() if not p.name.startswith(WORKER_PREFIX)]),
            "lock_files": sum((p / LOCK_FILE).exists() for p in outs),
            "results_temp_files": sum(len(list(p.glob(".*.tmp"))) for p in outs),
            "cache_temp_files": sum(len(list(c.rglob(".*.tmp"))) for c in self.work.glob("cache*")),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="uipbench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(work, args.seed)
    t0 = time.monotonic()
    reference, duration = soak.reference()
    print(f"reference run: {duration:.1f} s; kills at random in [0, 1.1 × a whole run] s", flush=True)
    kills, rounds = 0, 0
    while kills < args.kills:
        kills += soak.round(rounds, reference, args.kills - kills)
        rounds += 1
    left = soak.leftovers()
    killed = [e for e in soak.log if e["killed"]]
    summary = {
        "runs": len(soak.runs), "rounds": rounds, "kills": len(killed),
        "kills_by_signal": dict(Counter(e["signal"] for e in killed)),
        "exit_codes_of_killed_runs": dict(Counter(str(e["exit"]) for e in killed)),
        "kill_delays_s": sorted(e["delay_s"] for e in killed),
        "sigterm_before_the_handler": sum(bool(e.get("before_handler")) for e in killed),
        "stale_locks_left_by_sigkill": sum(e["lock_left"] for e in killed if e["signal"] == "SIGKILL"),
        "lock_take_overs_with_warning": sum(e["took_over"] for e in soak.log),
        "rounds_identical_to_reference": rounds,
        "leftovers": left, "problems": len(soak.problems), "seconds": round(time.monotonic() - t0),
    }
    (work / "soak.json").write_text(json.dumps({"summary": summary, "runs": soak.log}, indent=2))
    print(json.dumps(summary, indent=2))
    for problem in soak.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    bad = soak.problems or any(v for k, v in left.items() if k != "cache_temp_files")
    if not args.keep and not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
