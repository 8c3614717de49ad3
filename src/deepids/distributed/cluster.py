"""Connecting to a Ray cluster, or starting a small local one that only this machine can reach.

Ray's ports run code for whoever can reach them. A local cluster started here therefore listens
on loopback only (127.0.0.1: Ray's single-machine mode, see `_single_machine`), runs no
dashboard, and has token authentication on (Ray's default for a new local cluster: it writes a
token to ~/.ray/auth_token unless `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH` name one; a warning
is logged if `RAY_AUTH_MODE=disabled` turned it off). Connecting to an existing cluster
(`address="auto"`, `"host:port"` or `"ray://host:10001"`) uses that cluster's settings; the
token must then be in `RAY_AUTH_TOKEN` or ~/.ray/auth_token (README: "On a Ray cluster").
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
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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
            with _single_machine():
                ray.init(num_cpus=num_cpus, **quiet)
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


@contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode while a local cluster starts: the node's address is loopback, so
    the GCS, raylet, object manager and workers listen on 127.0.0.1 only (checked with `ss -ltnp`).

    It is the mode Ray uses on macOS and Windows (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`); on
    Linux Ray would otherwise pick the host's routable address and listen on every interface.
    """
    from ray._private import ray_constants

    before_env, before = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = before_env


def token_auth_on() -> bool:
    """Whether this process talks to Ray with token authentication."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    return get_authentication_mode() == AuthenticationMode.TOKEN


def cluster_cpus() -> float:
    """CPUs the connected cluster has in all."""
    return float(require_ray().cluster_resources().get("CPU", 1.0))
