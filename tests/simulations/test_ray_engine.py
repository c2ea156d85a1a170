"""Flower's Ray backend stopped in order: no thread is inside Ray when Ray shuts down (one
that touched it afterwards would end the process with exit 1 before fedsynth reported the
stop), and a stopped site sends no reply."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.supercore.task_identity import TaskIdentity

from simulations.ray_engine import LEAVE_RAY_TIMEOUT_S, OrderlyRayBackend, ray_under_fedsynths_stop

ACTOR_START_TIMEOUT_S = 120.0
TRAINING_S = 600.0
"""Far longer than the test: the site's training only ends if the backend ends it."""


def _training_site(started: Path) -> ClientApp:
    """A ClientApp whose training marks ``started`` and then runs for :data:`TRAINING_S`."""
    app = ClientApp()

    @app.train()
    def train(message: Message, _context: Context) -> Message:
        started.touch()
        time.sleep(TRAINING_S)
        return Message(RecordDict(), reply_to=message)

    return app


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower's task identity, which a Message outside a Flower process needs, then unset."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id = TaskIdentity._run_id = TaskIdentity._node_id = None


def _ray_frames(thread: threading.Thread) -> list[str]:
    """The files of ``thread``'s stack frames that belong to Ray."""
    frame = sys._current_frames().get(thread.ident or -1)
    files = []
    while frame is not None:
        files.append(frame.f_code.co_filename)
        frame = frame.f_back
    return [name for name in files if f"{os.sep}ray{os.sep}" in name]


@pytest.mark.usefixtures("task_identity")
def test_terminate_ends_a_training_site_and_shuts_ray_down_after_every_thread_left_it(
    tmp_path: Path,
) -> None:
    """A site trains (its thread waits in Ray); terminate ends its actor, the thread leaves
    Ray before Ray shuts down and parks there without a reply. Flower's own RayBackend fails
    this: its terminate shuts Ray down with the thread still inside ``ray.get``, for ever."""
    started = tmp_path / "started"
    backend = OrderlyRayBackend({"client_resources": {"num_cpus": 1, "num_gpus": 0}})
    app = _training_site(started)
    backend.build(lambda: app)
    message = Message(RecordDict(), dst_node_id=1, message_type="train")
    message.metadata.__dict__["_message_id"] = "train-1"
    context = Context(
        run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )
    replies: list[object] = []
    site = threading.Thread(
        target=lambda: replies.append(backend.process_message(message, context)), daemon=True
    )
    site.start()
    deadline = time.monotonic() + ACTOR_START_TIMEOUT_S
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), "the site never started training"
    assert backend.threads_inside_ray == 1
    assert _ray_frames(site)  # waiting in ray.get

    began = time.monotonic()
    backend.terminate()

    assert time.monotonic() - began < LEAVE_RAY_TIMEOUT_S  # left because its actor ended
    assert not ray.is_initialized()
    assert backend.threads_inside_ray == 0
    assert site.is_alive()
    assert not _ray_frames(site)  # parked outside Ray
    assert replies == []


def test_the_block_swaps_flowers_backend_and_ray_sigterm_handler_and_restores_them() -> None:
    from ray._private import utils as ray_utils

    flower_backend, ray_handler = raybackend.RayBackend, ray_utils.set_sigterm_handler
    with ray_under_fedsynths_stop():
        assert raybackend.RayBackend is OrderlyRayBackend
        assert ray_utils.set_sigterm_handler is not ray_handler
    assert raybackend.RayBackend is flower_backend
    assert ray_utils.set_sigterm_handler is ray_handler
