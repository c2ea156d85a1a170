"""Does a run fit in memory? Checked before it charges any privacy, with what to change if not.

The memory a run may use is the smaller of what the machine has free (``MemAvailable``, or
what is left under the control group's limit in a container) plus what this process already
holds (its resident memory is part of the estimate), and ``training.memory-limit-gib`` when set.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.config import FedsynthConfig, Scalar, load_config, to_run_config
from common.errors import ConfigError, FedsynthError
from common.memory.estimate import COEFFICIENTS, GIB, Workload, estimate_bytes, gib
from common.memory.generators import generator_workload

MEMINFO = Path("/proc/meminfo")
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")
CGROUP_USAGE = Path("/sys/fs/cgroup/memory.current")
STATUS = Path("/proc/self/status")
POISSON_TAIL = 1e-3
"""With DP-SGD a step's batch is Poisson-sampled: the plan is for the largest batch that a
step exceeds with at most this probability."""
SHAPE_FACTORS = (0.75, 0.5, 0.25)
"""data.target-shape levers: every side times these, largest first."""


class MemoryPlanError(FedsynthError):
    """A run would need more memory than it may use; the message says what would fit."""

    def __init__(self, message: str, needed: int, limit: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.limit = limit


@dataclass(frozen=True)
class MemoryPlan:
    """A run that fits: its estimated peak and the memory it may use, in bytes."""

    needed: int
    limit: int
    cases: int
    """Cases per step the estimate is for (with DP-SGD: the largest likely Poisson batch)."""

    def describe(self) -> str:
        """E.g. 'estimated peak 3.1 GiB of 21.5 GiB'."""
        return f"estimated peak {gib(self.needed)} of {gib(self.limit)}"


def _meminfo_available(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    try:
        limit = CGROUP_LIMIT.read_text().strip()
        used = int(CGROUP_USAGE.read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _own_resident() -> int:
    """This process's resident memory now (its peak where /proc is absent)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_memory(*, here: bool = True) -> int:
    """Bytes a run could use: the free memory of the machine (or of its control group,
    whichever is smaller), plus what this process already holds when the run is ``here``
    (rather than in processes yet to start)."""
    try:
        free = _meminfo_available(MEMINFO.read_text())
    except OSError:
        free = None
    room = [value for value in (free, _cgroup_room()) if value is not None]
    if not room:
        return 1 << 62  # nothing to read (not Linux): no limit known
    return min(room) + (_own_resident() if here else 0)


def memory_limit(limit_gib: float, *, here: bool = True) -> int:
    """The bytes a run may use: :func:`available_memory`, capped by ``limit_gib`` if > 0."""
    available = available_memory(here=here)
    return min(available, int(limit_gib * GIB)) if limit_gib > 0 else available


def gpu_memory_limit(limit_gib: float) -> int:
    """The GPU's free bytes (``torch.cuda.mem_get_info``), capped by ``limit_gib`` if > 0."""
    import torch

    free = int(torch.cuda.mem_get_info()[0])
    return min(free, int(limit_gib * GIB)) if limit_gib > 0 else free


def device_bytes(work: Workload, gpu: bool) -> int:
    """The estimate of ``work`` where its tensors live: all of it on the CPU; on a GPU, all
    but the process's base, which stays in the CPU's memory."""
    total = estimate_bytes(work)
    return max(0, total - int(COEFFICIENTS["base"])) if gpu else total


def trains_on_gpu(config: FedsynthConfig) -> bool:
    """Whether training runs on a GPU (``training.device``: cuda, or auto with one present)."""
    import torch

    return config.training.device != "cpu" and torch.cuda.is_available()


def largest_batch(batch_size: int, cases: int, private: bool) -> int:
    """Cases in the largest step a run takes: the batch size (at most the cases); with DP-SGD
    the Poisson batch (each case drawn with probability batch / cases) that a step exceeds
    with at most :data:`POISSON_TAIL` probability."""
    cases = max(1, cases)
    if not private or batch_size >= cases:
        return min(batch_size, cases)
    from scipy.stats import binom

    return max(1, int(binom.isf(POISSON_TAIL, cases, batch_size / cases)))


def plan_workload(
    work: Workload,
    limit_gib: float,
    *,
    what: str,
    levers: Mapping[str, Workload | None],
    copies: int = 0,
    gpu: bool = False,
) -> MemoryPlan:
    """Check that ``work`` fits in this process (``copies`` 0) or in ``copies`` new processes
    side by side; otherwise say, for each lever (a setting to change: the workload it would
    give, or None where it removes the step), what it would need. On a ``gpu`` the tensors
    (the estimate less the process's base) are compared with the GPU's free memory.

    Raises:
        MemoryPlanError: the estimate exceeds the memory the run may use.
    """
    limit = gpu_memory_limit(limit_gib) if gpu else memory_limit(limit_gib, here=copies == 0)
    copies = max(1, copies)
    needed = copies * device_bytes(work, gpu)
    if needed <= limit:
        return MemoryPlan(needed, limit, work.cases)
    source = (
        f"training.memory-limit-gib = {limit_gib:g}"
        if limit_gib > 0 and limit == int(limit_gib * GIB)
        else "free GPU memory"
        if gpu
        else "free memory"
    )
    batch = f"{work.cases} case{'s' if work.cases != 1 else ''} per step"
    parallel = f", {copies} sites at once" if copies > 1 else ""
    options = [_lever_text(lever, option, copies, limit, gpu) for lever, option in levers.items()]
    raise MemoryPlanError(
        f"{what} needs an estimated {gib(needed)} ({batch}{parallel}) but only {gib(limit)} "
        f"may be used ({source}); nothing was charged or trained. Change one of: "
        + "; ".join(options)
        + ". The estimate is a model fitted to measured peaks (common/memory)",
        needed,
        limit,
    )


def _lever_text(lever: str, option: Workload | None, copies: int, limit: int, gpu: bool) -> str:
    if option is None:
        return lever
    needed = copies * device_bytes(option, gpu)
    return f"{lever} would need {gib(needed)}{' (fits)' if needed <= limit else ''}"


def _lever_settings(config: FedsynthConfig) -> dict[str, tuple[str, Scalar]]:
    """Settings that lower memory, each to be changed alone: name -> (key, value)."""
    levers: dict[str, tuple[str, Scalar]] = {}
    batch = config.training.batch_size
    for size in sorted({max(1, batch // 2), 1}, reverse=True):
        if size < batch:
            levers[f"training.batch-size {size}"] = ("training.batch-size", size)
    multiple = 2 ** len(config.model.channels)  # every family's grid divides by this
    current = ",".join(map(str, config.data.target_shape))
    for factor in SHAPE_FACTORS:
        sides = (
            max(multiple, int(s * factor) // multiple * multiple) for s in config.data.target_shape
        )
        shape = ",".join(map(str, sides))
        if shape != current:
            levers[f'data.target-shape "{shape}"'] = ("data.target-shape", shape)
    groups = config.model.norm_groups
    widths = ",".join(str(max(groups, w // 2 // groups * groups)) for w in config.model.channels)
    levers[f'model.channels "{widths}"'] = ("model.channels", widths)
    if config.privacy.enabled:
        levers["privacy.enabled false (no DP-SGD)"] = ("privacy.enabled", False)
    return levers


def plan_memory(config: FedsynthConfig, cases: int, *, copies: int = 0) -> MemoryPlan:
    """Check that training ``config``'s generator on ``cases`` cases fits in memory, in this
    process (``copies`` 0) or in ``copies`` new processes at once (simulated sites).

    Raises:
        MemoryPlanError: it would not; the message gives the estimate, the limit and what
            each of the settings that lower memory would need.
    """

    def work(chosen: FedsynthConfig) -> Workload:
        step = largest_batch(chosen.training.batch_size, cases, chosen.privacy.enabled)
        return generator_workload(chosen, step)

    levers: dict[str, Workload] = {}
    for name, (key, value) in _lever_settings(config).items():
        try:
            levers[name] = work(load_config({**to_run_config(config), key: value}))
        except ConfigError:
            continue  # not a model the family can build (e.g. a grid too small for the GAN)
    return plan_workload(
        work(config),
        config.training.memory_limit_gib,
        what=f"training the {config.model.family} model on {shape_text(config)}",
        levers=levers,
        copies=copies,
        gpu=trains_on_gpu(config),
    )


def shape_text(config: FedsynthConfig) -> str:
    """data.target-shape as '64x64x64 voxels'."""
    return "x".join(map(str, config.data.target_shape)) + " voxels"
