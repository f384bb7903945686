"""Process trees of the deployment tooling: find and stop every process a federation started.

A federation starts each process in its own session with an environment variable
(:data:`TAG_VARIABLE`) that its children inherit, so :func:`terminate_tree` finds them all,
also after a parent died and they were re-parented. Processes are ``psutil.Process``
objects: psutil tells a process from a later one that got the same pid (by its start time),
so a pid the kernel hands out again is never signalled.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterable, Sequence

import psutil

TAG_VARIABLE = "FEDFLOWER_FEDERATION"
"""Environment variable that marks every process of one local federation (and its children)."""


def process(pid: int) -> psutil.Process | None:
    """The running process ``pid``, or ``None`` when there is none."""
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` (this very process, not a later one with its pid) still runs."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tagged(tag: str) -> list[psutil.Process]:
    """Processes of this user whose environment carries ``TAG_VARIABLE=tag``."""
    found = []
    for proc in psutil.process_iter(["environ"]):
        environ = proc.info.get("environ") or {}
        if environ.get(TAG_VARIABLE) == tag:
            found.append(proc)
    return found


def family(roots: Iterable[psutil.Process], tag: str | None = None) -> list[psutil.Process]:
    """The running ``roots``, the processes tagged ``tag`` and all their descendants."""
    found = dict.fromkeys([p for p in roots if alive(p)] + (tagged(tag) if tag else []))
    for proc in list(found):
        with contextlib.suppress(psutil.Error):
            found.update(dict.fromkeys(proc.children(recursive=True)))
    return [p for p in found if alive(p)]


class _Stopping:
    """The processes being stopped: those found so far, and those already signalled."""

    def __init__(self, roots: Sequence[psutil.Process], tag: str | None) -> None:
        self.tag = tag
        self.tracked = dict.fromkeys(p for p in roots if alive(p))
        self.signalled: set[psutil.Process] = set()

    def scan(self) -> None:
        """Track the children started meanwhile and newly tagged processes too."""
        self.tracked.update(dict.fromkeys(family(self.tracked, self.tag)))

    def signal_new(self, sig: int) -> None:
        """Send ``sig`` to the tracked processes that run and did not get it yet."""
        for proc in [p for p in self.tracked if p not in self.signalled and alive(p)]:
            self.signalled.add(proc)
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)  # psutil refuses a pid that now names another process

    def wait(self, seconds: float, sig: int) -> bool:
        """Wait up to ``seconds`` for all to end, signalling newcomers; whether they ended."""
        deadline = time.monotonic() + seconds
        while True:
            self.scan()
            if not any(alive(p) for p in self.tracked):
                return True
            if time.monotonic() >= deadline:
                return False
            self.signal_new(sig)
            time.sleep(0.1)


def terminate_tree(
    roots: Sequence[psutil.Process], grace: float = 10.0, tag: str | None = None
) -> list[psutil.Process]:
    """Stop processes ``roots``, their descendants and those tagged ``tag``.

    SIGTERM first, SIGKILL to what still runs after ``grace`` seconds; ``grace <= 0`` sends
    SIGKILL at once (a crash). Returns the processes that were stopped.
    """
    stopping = _Stopping(roots, tag)
    stopping.scan()
    if grace > 0:
        stopping.signal_new(signal.SIGTERM)
        if stopping.wait(grace, signal.SIGTERM):
            return list(stopping.tracked)
    stopping.signalled.clear()
    stopping.signal_new(signal.SIGKILL)
    stopping.wait(5.0, signal.SIGKILL)
    return list(stopping.tracked)
