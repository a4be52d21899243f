"""Process-level setup shared by every job and test: device choice and a loopback Ray.

One place decides device and dtype (CUDA + bf16 when present, else CPU + fp32) and how
Ray starts, so a job runs unchanged on a laptop, in CI and on a GPU cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceSpec:
    device: torch.device
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def select_device(prefer: str = "auto") -> DeviceSpec:
    """CUDA with bf16 when available (and not disabled by `prefer="cpu"`), else CPU fp32."""
    if prefer != "cpu" and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSpec(torch.device("cuda", torch.cuda.current_device()), dtype)
    if prefer == "cuda":
        raise RuntimeError("device=cuda was asked for but torch sees no CUDA device")
    return DeviceSpec(torch.device("cpu"), torch.float32)


# Serve's proxy imports the middleware list named here when it starts (ttds.serve.proxy_errors.middlewares)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_ERRORS_CALLBACK = "ttds.serve.proxy_errors:middlewares"


def set_loopback_env() -> None:
    """Environment that keeps Ray, gloo and DeepSpeed on 127.0.0.1 and CPU-friendly.

    Without these, Ray and the gloo process groups bind the machine's external interface
    (measured on this stack), and DeepSpeed probes for CUDA. Ray reads its variable when it
    is imported, so this runs on `import ttds` too (see ttds/__init__.py).
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not os.environ.get("RAY_ADDRESS"):
        # a local, single-machine run: keep every socket on loopback. On a cluster
        # (RAY_ADDRESS set) gloo must use the real interface between nodes.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def init_ray(num_cpus: int | None = None, object_store_mb: int = 512, **kwargs) -> None:
    """Connect to the cluster in RAY_ADDRESS if set, else start a local Ray on loopback."""
    set_loopback_env()  # before `import ray`: Ray reads these at import time
    import ray
    from ray._private import ray_constants

    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        # Ray read the variable when first imported; if that happened before ttds set it,
        # the constant is stale and the node would bind the external interface.
        ray_constants.ENABLE_RAY_CLUSTER = False
    if ray.is_initialized():
        return
    runtime_env = kwargs.pop("runtime_env", None) or {}
    env_vars = dict(runtime_env.get("env_vars", {}))
    # only a local run forwards the loopback/CPU settings: on a cluster the GPU workers pick
    # their own accelerator and gloo must use the real network interface
    local_keys = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "GLOO_SOCKET_IFNAME", "MASTER_ADDR", "DS_ACCELERATOR")
    # RAY_DATA_DISABLE_PROGRESS_BARS: a quiet job console (ttds.console) turns Ray Data's bars off in every process
    for key in ("TOKENIZERS_PARALLELISM", "RAY_DATA_DISABLE_PROGRESS_BARS") + (() if os.environ.get("RAY_ADDRESS") else local_keys):
        if key in os.environ:
            env_vars.setdefault(key, os.environ[key])
    runtime_env["env_vars"] = env_vars
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, log_to_driver=True, **kwargs)
        return
    # a Serve proxy started on this local Ray answers its own errors in the app's JSON contract
    # (ttds.serve.proxy_errors; the proxy reads the variable from the environment it inherits)
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_ERRORS_CALLBACK)
    ray.init(
        address="local",  # never attach to a stray `ray start` cluster left on this machine
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        runtime_env=runtime_env,
        **kwargs,
    )
