"""For visual Turing test tests: a tiny real phantom site, a tiny release, a study of both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import Scalar, load_config
from common.data.imageio import read_image, to_array
from common.models.interface import SyntheticPairs
from common.release import new_manifest, write_release
from evaluator.vtt.create import CreatedStudy, create_study
from simulations.phantoms import write_cohort

SETTINGS: dict[str, Scalar] = {
    "phantoms.sites": 1,
    "phantoms.cases-per-site": 4,
    "phantoms.size": 16,
    "data.target-shape": "16,16,16",
    "data.target-spacing": "12.5,12.5,12.5",
    "seed": 5,
}
CONFIG = load_config(SETTINGS)
RELEASE_CASES = 4


@dataclass(frozen=True)
class World:
    """A real site folder and a release folder on the same grid."""

    real: Path
    release: Path


def synthetic_release(folder: Path, n: int = RELEASE_CASES) -> Path:
    """A release of ``n`` blocky synthetic CT cases: air above, soft tissue (-0.3, about 50 HU)
    below, a tumour (label 1) and a bone block (label 2, 0.0: 512 HU) in it."""
    image = torch.full((n, 1, 16, 16, 16), -1.0)
    label = torch.zeros(n, 16, 16, 16, dtype=torch.long)
    for index in range(n):
        image[index, :, 4 + index :] = -0.3 + 0.02 * index
    image[:, :, 8:12, 8:12, 8:12] = 0.0
    label[:, 8:12, 8:12, 8:12] = 2
    label[:, 10:12, 4:6, 4:6] = 1
    manifest = new_manifest(
        CONFIG, family="diffusion", model_hash="ab" * 32, rounds=1, sites=[], cases=n, seed=1
    )
    write_release(SyntheticPairs(image, label), folder, CONFIG, manifest)
    return folder


def make_world(root: Path) -> World:
    """A 4-case phantom site and a 4-case release in ``root``."""
    cohort = write_cohort(CONFIG, root / "sites")
    return World(cohort.sites[0], synthetic_release(root / "release"))


def make_study(
    world: World, out: Path, n: int = 2, readers: str = "ana,ben", *, labels: bool = False
) -> CreatedStudy:
    """A study of ``n`` real and ``n`` synthetic cases for the named readers (with their label
    maps when ``labels``)."""
    return create_study(world.real, world.release, n, out, readers.split(","), labels=labels)


def voxels(path: Path) -> np.ndarray:
    """A study file's voxels, (z, y, x), as stored."""
    return to_array(read_image(path))


SERVER_START_TIMEOUT_S = 180.0
"""A backstop only: on a loaded 2-core machine the server's imports alone took over 60 s."""


def free_port() -> int:
    """A port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A `fedsynth vtt serve` process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        """Kill the server by its process id (no clean shutdown: a crash) and wait for it."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=SERVER_START_TIMEOUT_S)


def start_server(study: Path, port: int, log: Path) -> Server:
    """Start `fedsynth vtt serve STUDY --port PORT` (default host) and wait until it answers.

    Raises:
        RuntimeError: it exited or did not answer in time (its output is in the message).
    """
    fedsynth = Path(sys.executable).with_name("fedsynth")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(fedsynth), "vtt", "serve", str(study), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vtt serve exited: {log.read_text(encoding='utf-8')}")
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=2) as reply:
                if reply.status == 200:
                    return Server(process, url, log)
        except OSError:
            time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    raise RuntimeError(
        f"vtt serve did not answer in {SERVER_START_TIMEOUT_S} s: {log.read_text(encoding='utf-8')}"
    )
