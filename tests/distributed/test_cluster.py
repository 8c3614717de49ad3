"""Without the ray extra, the Ray engine says how to install it (no traceback); with it, a local cluster has token auth on."""

from __future__ import annotations

import sys

import pytest

from deepids.distributed import require_ray
from deepids.errors import ConfigError


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'deepids\[ray\]'"):
        require_ray()


def test_a_local_cluster_runs_on_loopback_with_token_authentication():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'deepids[ray]')")
    from deepids.distributed.cluster import LOOPBACK, ray_session, token_auth_on

    with ray_session(num_cpus=1):
        assert token_auth_on()
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK}
    assert not ray.is_initialized()
