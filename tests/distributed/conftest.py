"""A local Ray cluster (2 CPUs, loopback, token auth) for the in-process tests of a module, stopped after it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster started by deepids itself (`ray_session`), stopped when the tests end."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")
    from deepids.distributed.cluster import ray_session

    with ray_session(num_cpus=2):
        yield
