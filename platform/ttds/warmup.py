"""One-time install step: build the native pieces that would otherwise compile inside a test.

DeepSpeed compiles its CPU shared-memory communication op (~75 s) into the torch extensions
cache on first use; doing it here once keeps every later job and test from paying it.
Run with `python -m ttds.warmup`; it is safe to run again (the cache is reused).
"""

from __future__ import annotations

import time

from ttds.runtime import set_loopback_env


def main() -> None:
    set_loopback_env()
    t0 = time.time()
    try:
        from deepspeed.accelerator import get_accelerator

        acc = get_accelerator()
        if acc.device_name() == "cpu":
            builder = acc.create_op_builder("ShareMemCommBuilder")
            if builder is not None and builder.is_compatible():
                builder.load(verbose=False)
        print(f"ttds warmup: DeepSpeed ops ready on {acc.device_name()} in {time.time() - t0:.1f}s")
    except Exception as e:  # a missing compiler must not block install; jobs fall back to gloo
        print(f"ttds warmup: DeepSpeed op build skipped ({type(e).__name__}: {e})")


if __name__ == "__main__":
    main()
