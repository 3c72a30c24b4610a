"""Stages side by side: a study's independent stages (CycleGAN and the source-only segmenter, the
oracle and the adapted segmenter, ...) in ``lanes`` child processes, each with its share of the
cores.

Why: on a few CPU cores the demo's small nets keep two cores only partly busy (convolutions on
batch-1 64x128 frames, per-op overhead); two one-thread processes get more done than one
two-thread process (docs/speed.md). On a GPU, leave it at one lane.

Reproducibility: CPU results depend on the number of threads (reductions split differently), so
with lanes > 1 *every* stage that runs a net runs in a lane with the same thread count (cores //
lanes), whether or not another stage runs beside it: a stage's result never depends on timing.

Lanes are processes started with ``spawn`` (forking a process that has run OpenMP code can hang)
that live for the whole study, each running one stage at a time.
A lane dies with the study (``PR_SET_PDEATHSIG``), so a killed study leaves no orphan writing in
its folder; the study's folder lock covers the lanes (``runlock.inherit``). The parent alone
writes stages.json. The first stage to fail stops the others (an interrupted training stage
resumes from its last checkpoint on the next run) and its one-line error is the study's.

Lanes may be started ahead (``prestart``, by ``i2iuda run`` before it imports the study): a lane
then imports torch and the stages' modules (~3 s) while the study's own process imports and reads
its settings, instead of after it; ``run_in_lanes`` takes them (the demo's first stage starts ~2 s
sooner on 2 cores, docs/speed.md).
"""
from __future__ import annotations

import ctypes
import importlib
import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from .errors import UserError
from .progress import say


@dataclass
class Job:
    name: str
    needs: set[str]  # stage names that must be done first
    args: tuple  # for the lane's target function
    hash: str = ""  # the stage's config hash (stages.json)
    in_lane: bool = True  # False: runs in the study's process (no net: its result has no thread count)
    started: float = 0.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_lane(lanes: int) -> int:
    return max(1, cores() // lanes)


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this process when the study's process dies, kill -9 included
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _lane_main(conn, warm: tuple[str, ...]) -> None:
    """A lane: a process that runs ``target(*args)`` with ``threads`` threads for each (target,
    args, threads) it receives, and answers (status, message); "ok" comes with its peak memory. It
    lives for the whole study, so that torch and the nets' libraries (and ``warm``, the stages'
    modules) are imported once per lane, not once per stage."""
    _die_with_parent()
    # a spawned process inherits "spawn" as its default start method; the stages' data loaders
    # expect the platform's own (fork on Linux: workers that need not pickle their datasets)
    mp.set_start_method(None, force=True)
    import torch

    for module in warm:
        importlib.import_module(module)
    while True:
        try:
            work = conn.recv()
        except EOFError:  # the study ended without a word (it failed elsewhere)
            break
        if work is None:
            break
        target, args, threads = work
        torch.set_num_threads(threads)  # before the stage's first op: its results depend on it
        try:
            target(*args)
            conn.send(("ok", str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))  # the lane's peak (KiB)
        except UserError as e:
            conn.send(("user", str(e)))
        except BaseException as e:  # a bug: the traceback goes to the study's log
            conn.send(("error", "".join(traceback.format_exception(e))))


_AHEAD: list[tuple] = []  # (process, connection) of the lanes prestart started, not yet taken


def _start_lane(ctx, warm: tuple[str, ...]) -> tuple:
    here, there = ctx.Pipe()
    process = ctx.Process(target=_lane_main, args=(there, warm), name="lane")
    process.start()
    there.close()
    return process, here


def prestart(lanes: int, warm: tuple[str, ...] = ()) -> None:
    """Start ``lanes`` lanes now (none for fewer than 2), each importing ``warm`` (module names),
    for the next ``run_in_lanes`` to take; the caller ends those it did not take with
    ``end_untaken`` (a command that stopped at a bad setting, before its study ran)."""
    if lanes < 2:
        return
    ctx = mp.get_context("spawn")
    _AHEAD.extend(_start_lane(ctx, warm) for _ in range(lanes - len(_AHEAD)))


def end_untaken() -> None:
    for process, _ in _AHEAD:
        process.terminate()
        process.join()
    _AHEAD.clear()


def run_in_lanes(jobs: list[Job], lanes: int, target: Callable, run_here: Callable,
                 on_done: Callable[[Job, float, float | None], None]) -> None:
    """Run ``jobs`` (list order is priority), at most ``lanes`` at once, each as soon as its
    ``needs`` are done: a lane job as ``target(*job.args)`` in a lane process (one started ahead by
    ``prestart`` if any), the others as ``run_here(*job.args)`` in this process while no lane
    works. ``on_done(job, seconds, peak_mb)`` is called here as each one finishes (peak_mb: its
    lane's memory high-water mark so far, None for a job run here)."""
    ctx = mp.get_context("spawn")
    threads = threads_per_lane(lanes)
    # lanes as (process, connection), those prestart started first; busy: connection -> (job, process)
    idle, busy = [lane for lane in _AHEAD if lane[0].is_alive()], {}
    _AHEAD.clear()  # all taken: those beyond ``lanes`` end with the others below
    pending, finished = list(jobs), set()
    try:
        while pending or busy:
            ready = [j for j in pending if j.needs <= finished]
            for job in [j for j in ready if j.in_lane][:lanes - len(busy)]:
                if not idle:
                    idle.append(_start_lane(ctx, ()))
                process, conn = idle.pop()
                pending.remove(job)
                job.started = time.perf_counter()
                conn.send((target, job.args, threads))
                busy[conn] = (job, process)
                say(f"stage {job.name} (in a lane: {len(busy)} of {lanes} busy, "
                    f"{threads} thread{'s' * (threads > 1)} each)", "bold")
            if not busy:  # a stage without a net (data, report) runs here, alone
                job = next((j for j in ready if not j.in_lane), None)
                if job is None:  # cannot happen with a well-formed stage list
                    raise RuntimeError(f"stages waiting on nothing that runs: {[j.name for j in pending]}")
                pending.remove(job)
                say(f"stage {job.name}", "bold")
                t0 = time.perf_counter()
                run_here(*job.args)
                on_done(job, time.perf_counter() - t0, None)
                finished.add(job.name)
                continue
            for conn in wait(list(busy)):  # a lane's answer, or its end of the pipe closing
                job, process = busy.pop(conn)
                try:
                    status, message = conn.recv()
                except EOFError:  # the lane died without a word (killed, out of memory)
                    process.join()
                    status, message = "died", f"exit code {process.exitcode}"
                else:
                    idle.append((process, conn))
                if status != "ok":
                    _raise(job, status, message)
                seconds = time.perf_counter() - job.started
                on_done(job, seconds, int(message) / 1024)
                finished.add(job.name)
                say(f"stage {job.name}: done in {seconds:.0f} s", "dim")
    finally:
        for process, conn in idle:  # done: each lane ends its loop
            try:
                conn.send(None)
            except OSError:
                pass
        for _, process in busy.values():  # a failure or Ctrl-C: stop the lanes still working
            process.terminate()
        for process in [p for p, _ in idle] + [p for _, p in busy.values()]:
            process.join()


def _raise(job: Job, status: str, message: str) -> None:
    if status == "user":
        raise UserError(message)
    if status == "error":
        raise RuntimeError(f"stage {job.name} failed in its lane:\n{message}")
    raise UserError(f"stage {job.name}: its lane process died ({message}); run the study again to "
                    f"resume it")
