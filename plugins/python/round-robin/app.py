"""Round robin in Python: each healthy backend in turn.

Same WIT (world lb-policy), same behaviour as plugins/round-robin (Rust).
"""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import lb
from wit_world.imports import clock


# Module state: componentize-py may build a fresh `Lb` object per call, so
# the rotation lives here (one module per pooled instance).
healthy: list[bool] = []
next_index = 0


class Lb(exports.Lb):
    def configure(self, config: str) -> lb.Needs:
        global next_index
        settings = json.loads(config)
        if settings:
            raise Err(f"round-robin takes no settings, got: {', '.join(sorted(settings))}")
        # Start each pooled instance at a different place, as the Rust one does.
        # (Host imports cannot run while the component is pre-initialized,
        # so this is not done at import time.)
        next_index = clock.random_u64() % 1024
        return lb.Needs(0)

    def set_backends(self, backends) -> None:
        global healthy
        healthy = [b.healthy for b in backends]

    def select(self, req, live) -> int:
        global next_index
        n = len(healthy)
        for k in range(n):
            i = (next_index + k) % n
            if healthy[i]:
                next_index = i + 1
                return i
        raise Err("no backend available")
