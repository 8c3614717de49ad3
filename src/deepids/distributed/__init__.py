"""Past one machine: scoring and training on a Ray cluster (the optional `deepids[ray]` extra).

A thin adapter over the engine-free core: Ray schedules the work, and every record is read,
windowed and scored by the same code as single-process scoring, so the numbers are the same.

- `cluster.py`: connecting to a cluster, or starting a local one bound to loopback with token
  authentication on.
- `ray_score.py`: `score_files_ray`, `deepids score --engine ray` (Ray Data).
- `ray_train.py`: `train_ray`, `deepids train --engine ray` (Ray Train, DDP).
"""

from __future__ import annotations

from deepids.errors import ConfigError

RAY_MISSING = "the Ray engine needs the ray extra: pip install 'deepids[ray]'"


def require_ray():
    """The `ray` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray
