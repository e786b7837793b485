"""Data-parallel placement with JAX's own sharding: one ``Mesh``, the games axis split over it.

The learner never moves data by hand. The first states of a batch of games are constrained to
``NamedSharding(mesh, P("data"))`` along the games axis; XLA's sharding propagation then keeps the
rollout (a scan over steps of per-game work), the ego-graphs and the per-game losses on the device
that holds each game, and inserts the all-reduce of the gradients of the replicated parameters.
One device is the same code path with a one-device mesh.

Multi-host: call ``initialize_multihost()`` first in every process (it wraps
``jax.distributed.initialize``, which reads SLURM / TPU-pod / ``JAX_COORDINATOR_ADDRESS``
settings); ``make_mesh()`` then spans every process's devices (README: "Scaling out").
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: Name of the mesh axis the games are split over.
DATA = "data"
#: Name of the mesh axis a seed set's seeds are split over (``seeds_mesh``).
SEEDS = "seeds"


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D device mesh with axis ``"data"``.

    Args:
      num_devices: devices to use (the first ``num_devices`` of ``jax.devices()``); 0 = all.

    Raises:
      ValueError: more devices asked for than visible.
    """
    devices = jax.devices()
    count = num_devices or len(devices)
    if not 1 <= count <= len(devices):
        raise ValueError(
            f"invalid config field 'num_devices'={num_devices}: {len(devices)} device(s) are "
            "visible (0 = all)"
        )
    return Mesh(np.asarray(devices[:count]), (DATA,))


def seeds_mesh(seeds: int, num_devices: int = 0) -> Mesh:
    """A ``("seeds", "data")`` mesh of shape ``(d, 1)`` for a seed set: its seeds split over
    ``d`` devices, the games of each seed on one.

    Args:
      seeds: the set's seeds.
      num_devices: ``d``; 0 = the most visible devices that split the seeds evenly.

    Raises:
      ValueError: more devices asked for than visible, or a count that does not divide the seeds.
    """
    devices = jax.devices()
    if num_devices:
        make_mesh(num_devices)  # the same check and message as for the games
        if seeds % num_devices:
            raise ValueError(
                f"invalid config field 'num_devices'={num_devices}: a seed set splits its "
                f"{seeds} seeds evenly over its devices; choose a divisor of {seeds} (0 = auto)"
            )
        count = num_devices
    else:
        count = max(d for d in range(1, min(seeds, len(devices)) + 1) if seeds % d == 0)
    return Mesh(np.asarray(devices[:count]).reshape(count, 1), (SEEDS, DATA))


def shard_seeds(tree, mesh: Mesh):
    """Place ``tree`` (a leading seeds axis on every leaf) split over the mesh's seeds axis."""
    return jax.device_put(tree, NamedSharding(mesh, P(SEEDS)))


def check_divisible(games: int, mesh: Mesh) -> None:
    """Raise unless ``games`` splits evenly over the mesh (a clear error before any compile)."""
    size = mesh.shape[DATA]
    if games % size:
        raise ValueError(
            f"invalid config field 'games_per_batch'={games}: must be a multiple of the "
            f"{size} devices of the mesh (or set num_devices)"
        )


def data_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Sharding of an array whose axis ``axis`` is the games axis (later axes whole)."""
    return NamedSharding(mesh, P(*([None] * axis), DATA))


def shard_games(tree, mesh: Mesh, axis: int = 0):
    """Constrain every leaf of ``tree`` (inside jit) to be split over ``"data"`` along ``axis``."""
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, data_sharding(mesh, axis)), tree
    )


def replicate(tree, mesh: Mesh):
    """Place ``tree`` (e.g. parameters and optimiser state) on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def initialize_multihost() -> bool:
    """Start multi-host JAX when launched by a cluster launcher; return whether it did.

    Runs ``jax.distributed.initialize()`` (which finds the coordinator from SLURM, Open MPI,
    TPU-pod or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``) when
    ``QMARL_MULTIHOST=1`` is set; otherwise does nothing (one process).
    """
    if os.environ.get("QMARL_MULTIHOST") != "1":
        return False
    jax.distributed.initialize()
    return True
