"""Beyond one machine, on Ray: the same `imgcls predict` on Ray Data and `imgcls train` on Ray Train.

    imgcls predict RUN photos/ --output p.parquet --engine ray [--address ray://head:10001] [--workers 8]
    imgcls train DATA --engine ray --workers 4 [--address auto]

Ray is an optional extra (`pip install 'imgcls[ray]'`). Without `--address` a local Ray instance is
started with this machine's cores; with it, imgcls joins that cluster. On a cluster, every node needs
imgcls installed and must see the photos (and, for training, the run folder) at the same path:
the docs' clusters page says how.
"""

from __future__ import annotations

import logging
import os
import socket

from imgcls.errors import ImgclsError, first_line

INSTALL = "install the Ray extra: pip install 'imgcls[ray]'"


def connect(address: str | None = None):
    """The `ray` module, connected: to the cluster at `address`, or to a new local instance."""
    try:
        import ray
    except ImportError:
        raise ImgclsError(f"--engine ray needs Ray; {INSTALL}") from None
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no warning about CUDA_VISIBLE_DEVICES
    # Ray's own chatter (state-API retries without a dashboard, actor warnings) stays in
    # its log files (/tmp/ray/session_latest/logs); errors and imgcls's own messages still show here
    quiet = {"logging_level": logging.ERROR, "logging_config": ray.LoggingConfig(log_level="ERROR")}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ImgclsError(f"--engine ray: cannot reach {where} ({first_line(error)})") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port (or ray://host:port) that accepts no TCP connection is said at once: Ray itself
    retries such an address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ImgclsError(f"--address {address}: no Ray cluster answers there ({reason})") from None


def cluster_cpus(ray) -> int:
    """CPUs the cluster offers now (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
