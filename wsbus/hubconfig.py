"""The hub's limits and policies (its parts read them from here)."""

from __future__ import annotations

import msgspec

__all__ = ["HubConfig"]


class HubConfig(msgspec.Struct):
    """The hub's limits and policies, with their defaults: the one place they are
    written (``wsbus.config.Settings`` takes the ones a user sets from here)."""

    max_body: int = 65536
    max_frame: int = 1 << 20
    max_history: int = 1000
    max_channels: int = 64
    send_queue: int = 8 << 20
    max_held: int = 50_000
    ref_window: int = 100_000
    batch_max: int = 4096
    max_pending_writes: int = 20_000
    retention_days: float = 30.0
    retention_count: int = 0
    prune_interval: float = 3600.0
    replay_page: int = 500
    loop_window: float = 180.0
    max_identity_connections: int = 64
    auth_reload: float = 1.0
