"""`ServeSettings`: how `seglab serve` listens, batches and what it refuses, as plain values (no torch), so the
command line's defaults and help come from here."""

from __future__ import annotations

import dataclasses

from seglab.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """The service's address, its dynamic batching and the limits applied to every request before any work."""

    # Address to bind. 127.0.0.1 answers this machine only; 0.0.0.0 exposes the service to the network.
    host: str = "127.0.0.1"
    # TCP port (0 picks a free one).
    port: int = 8000
    # Most images in one forward pass. Only images of one size (height x width) share a pass.
    max_batch: int = 8
    # Longest the oldest waiting image waits for others of its size before its pass starts anyway (ms).
    max_wait_ms: float = 10.0
    # Most images waiting for a forward pass; one more is refused with 503 and Retry-After.
    queue: int = 64
    # Seconds from a request's arrival to its answer: a body still arriving then gets 408, an image still
    # waiting or in its forward pass 504 (and leaves the queue).
    timeout_s: float = 30.0
    # Largest request body accepted (MB, 10^6 bytes); a larger one is refused with 413 before it is read whole.
    max_body_mb: float = 20.0
    # Largest image accepted (width x height, from the file's header, before decoding): 413 above it.
    max_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve: {name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout_s", "max_body_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"serve: {name} must be positive, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve: max_wait_ms must be 0 or more, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve: port must be in 0..65535, got {self.port}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1_000_000)
