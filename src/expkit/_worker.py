"""A worker process of the processes executor: ``python -m expkit._worker FD DRIVER_PID``.

It receives jobs on the inherited socket ``FD``, runs each on a view of the
environment read from its journal, and sends back the outcome. Ctrl-C
(SIGINT from the driver) stops the running step, which reports CANCELLED;
between steps it is ignored.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import socket
import sys

from ._environment import Environment
from ._journal import Journal
from ._processes import recv_message, send_message
from ._work import Job, execute

_PR_SET_PDEATHSIG = 1


def _environment(
    where: str, cache: dict[tuple[str, bool], Environment], *, durable: bool
) -> Environment:
    env = cache.get((where, durable))
    if env is None:
        # The driver checked the environment's owner and mode when it loaded it.
        # Durable as the run is: a step's dump() commits through this one.
        journal = Journal.open(where, durable=durable)
        env = cache[where, durable] = Environment._bind(journal)  # noqa: SLF001
    env.refresh()
    return env


def _die_with_driver(driver: int) -> None:
    """Linux: be killed when the driver dies, so no orphan runs a step twice.

    A driver killed with SIGKILL cannot stop its workers; its steps become
    INTERRUPTED and the next run re-runs them, which must not race with an
    orphan still running the same step.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != driver:  # it died before the request took effect
        os._exit(1)


def main() -> None:
    """Serve jobs until the driver closes the socket."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    _die_with_driver(int(sys.argv[2]))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The driver may start workers while it holds Ctrl-C off; masks are inherited.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    setup = recv_message(sock)
    if setup is None:
        return
    sys.path[:] = pickle.loads(setup)  # from the driver, over a private socket
    envs: dict[tuple[str, bool], Environment] = {}
    while True:
        try:
            message = recv_message(sock)
        except KeyboardInterrupt:
            continue  # an interrupt between steps: nothing to stop
        if message is None:
            return
        where, durable, job = pickle.loads(message)  # cloudpickle's output; from the driver only
        assert isinstance(job, Job)  # noqa: S101
        outcome = execute(job, _environment(where, envs, durable=durable)._view())  # noqa: SLF001
        reply = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        # A late interrupt must not cut the reply in half: hold it off while sending.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            send_message(sock, reply)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


if __name__ == "__main__":
    main()
