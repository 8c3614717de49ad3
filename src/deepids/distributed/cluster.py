"""Connecting to a Ray cluster, or starting a small local one that only this machine can reach.

Ray's ports run code for whoever can reach them. A local cluster started here therefore binds
to loopback (127.0.0.1: nodes and workers address each other there), runs no dashboard, and
has token authentication on (Ray's default for a new local cluster: it writes a token to
~/.ray/auth_token unless `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH` name one; a warning is
logged if `RAY_AUTH_MODE=disabled` turned it off). Ray 2.60's gRPC servers still listen on
every interface whatever the node address (seen with `ss -ltnp`): the token is what guards
them, and a firewall should keep Ray's ports off untrusted networks. Connecting to an existing cluster
(`address="auto"`, `"host:port"` or `"ray://host:10001"`) uses that cluster's settings; the
token must then be in `RAY_AUTH_TOKEN` or ~/.ray/auth_token (docs: README, "On a Ray cluster").
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from deepids.distributed import require_ray
from deepids.errors import ConfigError

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray session already open, connect to `address`, or start a local loopback cluster.

    A session this function opened is shut down when the block ends; one the caller opened is left open.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    try:
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, _node_ip_address=LOOPBACK, **quiet)
            log.info("started a local Ray cluster on %s with %s CPUs", LOOPBACK, num_cpus or "all")
            if not token_auth_on():
                log.warning("the local Ray cluster runs without token authentication (RAY_AUTH_MODE=%s)",
                            os.environ.get("RAY_AUTH_MODE"))
        else:
            if num_cpus is not None:
                raise ConfigError("--num-cpus sizes a local cluster only; a running cluster has its own resources")
            ray.init(address=address, **quiet)
    except ConfigError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def token_auth_on() -> bool:
    """Whether this process talks to Ray with token authentication."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    return get_authentication_mode() == AuthenticationMode.TOKEN


def cluster_cpus() -> float:
    """CPUs the connected cluster has in all."""
    return float(require_ray().cluster_resources().get("CPU", 1.0))
