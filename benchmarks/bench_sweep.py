"""Sweeps end to end: throughput against the core alone, and peak memory.

(a) Patients per second of `pulsehpg.sweep` on benchmarks/sweep-bench.toml (clomiphene for
    2 weeks with one visit; every cohort is first equilibrated, Numerics.burn_in_days), with
    the default local executor (one worker process per core), including the HDF5 block files
    and the merge, next to the core alone: a bare `pulsehpg.Cohort` of the same scenario's
    patients (built with its burn-in, then advanced over the same 2 weeks) in this process on
    one thread, times the number of cores.
    The core alone gets the regimen's doses (clomiphene daily) at the same times.
(b) Peak memory (max RSS) of the sweep's parent process and of its largest worker, for
    sweeps of growing size with the same block size (1000 patients per block).
(c) Peak memory and time of `pulsehpg merge` (virtual and --consolidate) over 100 and
    1000 blocks.

Every measurement runs in a fresh process (max RSS only grows within one).

    python benchmarks/bench_sweep.py                     # 10^4, 10^5, 2x10^5 patients, merges
    python benchmarks/bench_sweep.py --sizes 10000 100000 1000000
    python benchmarks/bench_sweep.py --quick             # 2,000 and 10,000 patients, 200 blocks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "sweep-bench.toml"


def _config(n_patients: int, per_point: int = 1000, block_size: int | None = None) -> dict:
    doc = tomllib.loads(CONFIG.read_text())
    doc["sweep"]["patients"] = per_point
    doc["sweep"]["points"] = max(1, n_patients // per_point)
    if block_size is not None:
        doc["sweep"]["block_size"] = block_size
    return doc


def _cpu_s(who) -> float:
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


def _rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


# -- measurements, each run as `bench_sweep.py --child KIND ...` in a fresh process ----------
def child_core(n: int) -> dict:
    import numpy as np

    from pulsehpg.run import build_cohort
    from pulsehpg.sweep import dumps_toml, parse_config

    cfg = parse_config(dumps_toml(_config(n, per_point=n)), None, HERE)
    sc = cfg.scenario_at(cfg.design()[0])
    horizon = sum(p.duration for p in sc.phases)
    # the same doses as the regimen gives (the core's drug-free fast path would otherwise
    # make the core alone do less work than the sweep's patients)
    (phase,) = sc.phases
    doses = sorted((t, dp.drug, dp.dose) for dp in phase.drugs
                   for t in dp.schedule.times(dp.start, min(dp.stop, phase.duration)))
    c0 = _cpu_s(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    c = build_cohort(sc, n, np.random.SeedSequence(cfg.seed, spawn_key=(0, 0)), threads=1)
    t1 = time.perf_counter()
    for t, drug, amount in doses:
        c.advance_to(t)
        c.dose(drug, amount)
    c.advance_to(horizon)
    t2 = time.perf_counter()
    return {"patients": n, "seconds": t2 - t0, "cpu_s": _cpu_s(resource.RUSAGE_SELF) - c0,
            "build_s": t1 - t0, "advance_s": t2 - t1,
            "horizon_days": horizon / 24.0, "rss_mb": _rss_mb(resource.RUSAGE_SELF)}


def child_sweep(n: int, out: str, workers: int | None) -> dict:
    import pulsehpg

    doc = _config(n)
    c0 = _cpu_s(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = pulsehpg.sweep(doc, out=out, workers=workers)
    wall = time.perf_counter() - t0
    cpu = _cpu_s(resource.RUSAGE_SELF) - c0 + _cpu_s(resource.RUSAGE_CHILDREN)
    return {"cpu_s": cpu, "parent_cpu_s": _cpu_s(resource.RUSAGE_SELF) - c0,
            "patients": res.patients_run, "blocks": res.blocks_run, "wall_s": wall,
            "blocks_s": res.seconds, "parent_mb": _rss_mb(resource.RUSAGE_SELF),
            "worker_mb": _rss_mb(resource.RUSAGE_CHILDREN)}


def child_blocks(n_blocks: int, out: str) -> dict:
    import pulsehpg

    doc = _config(n_blocks, per_point=1, block_size=1)
    t0 = time.perf_counter()
    res = pulsehpg.sweep(doc, out=out, workers=None)
    return {"blocks": res.blocks_run, "wall_s": time.perf_counter() - t0}


def child_merge(out: str, consolidate: bool) -> dict:
    from pulsehpg.sweep import merge

    t0 = time.perf_counter()
    res = merge(out, consolidate=consolidate)
    return {"blocks": len(res.blocks), "seconds": time.perf_counter() - t0,
            "rss_mb": _rss_mb(resource.RUSAGE_SELF), "bytes": os.path.getsize(out)}


def run_child(*args) -> dict:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def baseline_rss() -> float:
    """Max RSS of a process that only imports pulsehpg (what every process starts with)."""
    code = ("import resource, pulsehpg, pulsehpg.sweep, h5py; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="*", default=None,
                    help="sweep sizes in patients (multiples of 1000); the throughput is "
                         "compared for 100,000 (or the largest below it)")
    ap.add_argument("--merge-blocks", type=int, nargs="+", default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "core":
            r = child_core(int(rest[0]))
        elif kind == "sweep":
            r = child_sweep(int(rest[0]), rest[1], int(rest[2]) or None)
        elif kind == "blocks":
            r = child_blocks(int(rest[0]), rest[1])
        else:
            r = child_merge(rest[0], rest[1] == "1")
        print(json.dumps(r))
        return

    import h5py
    import numpy

    import pulsehpg
    from pulsehpg.sweep import default_workers

    sizes = args.sizes if args.sizes is not None else (
        [2000, 10_000] if args.quick else [10_000, 100_000, 200_000])
    merges = args.merge_blocks or ([200] if args.quick else [100, 1000])
    cores = default_workers()
    workers = args.workers or cores
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cores} usable), "
          f"Python {platform.python_version()}, numpy {numpy.__version__}, h5py "
          f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version}), pulsehpg "
          f"{pulsehpg.__version__}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"process after imports: {baseline_rss():.0f} MB max RSS")

    core = run_child("core", 1000)
    core_rate = core["patients"] / core["seconds"]
    core_cpu = core["cpu_s"] / core["patients"]
    # the same, one process per core at once: what the cores give under the current load
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "core", "1000"],
                              stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    par = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    par_rate = sum(r["patients"] for r in par) / max(r["seconds"] for r in par)
    print(f"\ncore alone, 1 thread: {core['patients']} patients, build with burn-in "
          f"{core['build_s']:.2f} s + {core['horizon_days']:.0f} days {core['advance_s']:.2f} s"
          f" = {core_rate:.1f} patients/s ({core_cpu * 1e3:.2f} CPU ms per patient); x {cores} "
          f"cores = {core_rate * cores:.1f}/s", flush=True)
    print(f"core alone, {cores} processes at once: {par_rate:.1f} patients/s", flush=True)

    print("\nvs core: patients/s over core alone x cores; vs par: over the cores' processes at "
          "once; CPU: core CPU time per patient over the sweep's (parent and workers), which "
          "other load on the machine does not change")
    print(f"\n{'patients':>10}{'blocks':>8}{'wall s':>9}{'patients/s':>12}{'vs core':>9}"
          f"{'vs par':>8}"
          f"{'CPU ms/pt':>11}{'CPU':>6}{'parent MB':>11}{'worker MB':>11}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for n in sizes:
            out = Path(tmp) / f"s{n}.h5"
            r = run_child("sweep", n, out, args.workers or 0)
            rate = r["patients"] / r["wall_s"]
            print(f"{r['patients']:>10}{r['blocks']:>8}{r['wall_s']:>9.1f}{rate:>12.1f}"
                  f"{rate / (core_rate * cores):>9.0%}{rate / par_rate:>8.0%}"
                  f"{r['cpu_s'] / r['patients'] * 1e3:>11.2f}"
                  f"{core_cpu / (r['cpu_s'] / r['patients']):>6.0%}{r['parent_mb']:>11.0f}"
                  f"{r['worker_mb']:>11.0f}", flush=True)
            for f in sorted(Path(tmp).glob(f"s{n}.h5*")):
                if f.is_dir():
                    for g in f.iterdir():
                        g.unlink()
                    f.rmdir()
                else:
                    f.unlink()

        print(f"\n{'merge of':>10}{'mode':>13}{'seconds':>9}{'MB RSS':>8}{'file KB':>9}",
              flush=True)
        for nb in merges:
            out = Path(tmp) / f"m{nb}.h5"
            run_child("blocks", nb, out)
            for consolidate in (False, True):
                r = run_child("merge", out, int(consolidate))
                mode = "consolidate" if consolidate else "virtual"
                print(f"{str(r['blocks']) + ' blocks':>10}{mode:>13}{r['seconds']:>9.2f}"
                      f"{r['rss_mb']:>8.0f}{r['bytes'] / 1024:>9.0f}", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{workers} worker(s)")


if __name__ == "__main__":
    main()
