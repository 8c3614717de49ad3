"""Without the ray extra, the Ray engine says how to install it; with it, deepids' local cluster
listens on loopback, with token authentication on."""

from __future__ import annotations

import sys

import pytest

from deepids.distributed import require_ray
from deepids.errors import ConfigError


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'deepids\[ray\]'"):
        require_ray()


def test_a_local_cluster_runs_on_loopback_with_token_authentication(ray_cluster):
    import ray

    from deepids.distributed.cluster import LOOPBACK, ray_session, token_auth_on

    assert token_auth_on()
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {LOOPBACK}
    with ray_session():                                    # a session already open is used, and left open
        assert ray.is_initialized()
    assert ray.is_initialized()
