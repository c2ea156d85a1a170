"""Flower's simulation engine (Ray) under fedsynth's stop: SIGTERM left to fedsynth, and
Ray shut down only when no thread of Flower's is inside it.

Flower's ``RayBackend.terminate`` shuts the driver's Ray worker down while Flower's worker
threads may still wait on a site's actor. A thread that touches Ray after that ends the whole
process at once (exit 1, Ray's ``core_worker_process.cc``: "The core worker has already been
shutdown"), before fedsynth has recorded and reported the stop; one still waiting stays blocked
for ever. :class:`OrderlyRayBackend` ends the sites' actors first, waits until every thread
has left Ray, and only then shuts Ray down.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.server.superlink.fleet.vce.backend import raybackend

LEAVE_RAY_TIMEOUT_S = 30.0
"""How long a stop waits for Flower's threads to leave Ray once the sites' actors are ended
(they leave within a second); after it Ray is shut down regardless."""


class OrderlyRayBackend(raybackend.RayBackend):
    """Flower's Ray backend, terminated in order: actors ended, threads out of Ray, then Ray
    shut down. A thread whose call ends after termination began (its reply would be the stop's
    doing, not a site's) waits there until the process ends instead of replying."""

    def __init__(self, backend_config: Any) -> None:
        super().__init__(backend_config)
        self._calls = threading.Condition()
        self._inside_ray = 0
        self._terminating = False
        self._actors: list[Any] = []
        self._process_ends = threading.Event()  # never set: parked threads end with the process

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        """Flower's actor pool; every actor is kept, so termination can end the busy ones."""
        super().build(app_fn)
        if self.pool is not None:
            self._actors = list(self.pool.pool)

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        """Run the ClientApp on a site's actor (Flower's), counted while inside Ray."""
        with self._calls:
            if self._terminating:
                self._park()
            self._inside_ray += 1
        try:
            return super().process_message(message, context)
        finally:
            with self._calls:
                self._inside_ray -= 1
                self._calls.notify_all()
                if self._terminating:
                    self._park()

    @property
    def threads_inside_ray(self) -> int:
        """How many of Flower's threads are inside a Ray call now."""
        with self._calls:
            return self._inside_ray

    def terminate(self) -> None:
        """End every actor (busy ones too: the threads waiting on them return), wait until no
        thread is inside Ray (at most :data:`LEAVE_RAY_TIMEOUT_S`), then shut Ray down."""
        import ray

        with self._calls:
            self._terminating = True
        try:
            for actor in self._actors:
                ray.kill(actor)
            with self._calls:
                self._calls.wait_for(lambda: self._inside_ray == 0, timeout=LEAVE_RAY_TIMEOUT_S)
        finally:
            gc.collect()  # object references in garbage cycles are released while Ray is up
            ray.shutdown()

    def _park(self) -> None:
        self._calls.release()
        try:
            self._process_ends.wait()
        finally:
            self._calls.acquire()


@contextlib.contextmanager
def ray_under_fedsynths_stop() -> Iterator[None]:
    """Within the block Flower's simulation engine uses :class:`OrderlyRayBackend`, and
    ``ray.init`` leaves the process's SIGTERM handler alone: Ray's own (``sys.exit`` in the
    driver) would unwind Flower's simulation, its threads reporting the actors this ends as
    tracebacks, before fedsynth knew of the stop; fedsynth's (``common.interrupts``) stops a
    simulation as it stops every command."""
    from ray._private import utils as ray_utils

    flower_backend, ray_handler = raybackend.RayBackend, ray_utils.set_sigterm_handler
    raybackend.RayBackend = OrderlyRayBackend  # type: ignore[misc]
    ray_utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    finally:
        raybackend.RayBackend = flower_backend  # type: ignore[misc]
        ray_utils.set_sigterm_handler = ray_handler


def stop_ray() -> None:
    """End Ray's daemons and actors now (a stopped run's children must not outlive it)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
