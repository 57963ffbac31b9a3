"""
Decode the values of caches where they cannot take the run down.

Anyone who can write to a cache chooses what a session's value is made of,
and a value of a few hundred bytes can be built to take minutes (a set of
integers whose hashes collide), gigabytes, or the C stack (a crash, not an
error). Checking each pickle for every such shape beforehand is a race
with whoever writes the next one; so the values of caches are unpacked
and measured in a child process instead, with a bound on its memory, while
the parent watches the time. A session that crashes the child or runs past
its time is counted as too costly, by itself, and the run goes on.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import resource
import signal
from multiprocessing.connection import Connection
from typing import Any

from analyze_sessions.decoding import TOO_COSTLY, DecodedSession, Decoder
from analyze_sessions.sources import RawSession


class Sandbox:
    """
    Decodes batches of sessions with ``decoder`` in a forked child process,
    whose memory is bounded to ``memory`` bytes more than it starts with.

    A batch has ``SECONDS_A_SESSION`` seconds a session, and a few to
    spare; if the child does not answer in time, or dies, its batch is
    decoded again a session at a time, each in a child of its own if need
    be, so that only the session that was too costly is counted as such.
    """

    SECONDS_A_SESSION = 2.0
    SECONDS_TO_SPARE = 5.0

    def __init__(self, decoder: Decoder, memory: int) -> None:
        self._decoder = decoder
        self._memory = memory
        self._child: Any = None
        self._connection: Connection | None = None

    def decode(self, batch: list[RawSession]) -> list[DecodedSession]:
        """What ``decoder.decode()`` gives for each session of ``batch``, in order."""
        if not batch:
            return []
        seconds = self.SECONDS_TO_SPARE + self.SECONDS_A_SESSION * len(batch) / 100
        decoded = self._ask(batch, seconds)
        if decoded is not None:
            return decoded
        # One of them took the child down, or held it: find which.
        return [
            (self._ask([raw], self.SECONDS_A_SESSION) or [_too_costly(raw)])[0] for raw in batch
        ]

    def close(self) -> None:
        """Stop the child, if one runs."""
        if self._connection is not None:
            try:
                self._connection.send(None)
            except OSError:  # Gone already.
                pass
        self._stop()

    def _ask(self, batch: list[RawSession], seconds: float) -> list[DecodedSession] | None:
        """The child's answer for ``batch``, or None if it died or did not answer in time."""
        connection = self._start()
        try:
            connection.send(batch)
            if connection.poll(seconds):
                answer: list[DecodedSession] = connection.recv()
                return answer
        except (EOFError, OSError):  # It died (killed, crashed) on the way.
            pass
        self._stop()
        return None

    def _start(self) -> Connection:
        if self._connection is None:
            context = multiprocessing.get_context("fork")
            parent, child = context.Pipe()
            self._child = context.Process(
                target=_serve, args=(child, self._decoder, self._memory), daemon=True
            )
            self._child.start()
            child.close()
            self._connection = parent
        return self._connection

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.join()
            self._child = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _serve(connection: Connection, decoder: Decoder, memory: int) -> None:
    """The child: decode each batch the parent sends, until it sends None."""
    # Ctrl-C is the parent's to handle, and nothing of the child is printed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.disable()  # It writes a crash's report to a stderr of its own.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    _bound_memory(memory)
    while True:
        batch = connection.recv()
        if batch is None:
            return
        connection.send([decoder.decode(raw) for raw in batch])


def _bound_memory(memory: int) -> None:
    """Let the address space grow by ``memory`` bytes at most: past it, MemoryError."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
    except OSError:  # No /proc (not Linux): the time limit alone holds.
        return
    limit = pages * os.sysconf("SC_PAGE_SIZE") + memory
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _too_costly(raw: RawSession) -> DecodedSession:
    return DecodedSession(
        raw.stored_size, failure=TOO_COSTLY, expires_at=raw.expires_at, key=raw.key
    )
