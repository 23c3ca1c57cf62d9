"""Orchestrator replicas scale on the work waiting in Redis, not on requests.

An orchestrator replica serves no requests Serve could count: it takes runs from the Redis queue. So each
replica reports, through Serve's custom autoscaling metrics (``record_autoscaling_stats``), the queue's
depth (runs queued or in progress: a finished run leaves the queue) and the runs it drives itself, and
``QueueDepthPolicy`` asks for enough replicas that each drives about ``runs_per_replica`` of them::

    replicas = ceil(max(queue depth, runs in progress) / runs_per_replica)

Serve applies the deployment's bounds and delays to what the policy asks for: a burst scales up once it has
held for ``upscale_delay_s``, an idle queue scales down to the minimum once it has held for
``downscale_delay_s`` (a short lull keeps the replicas). Until a replica has reported, the count stays.

The policy runs in Serve's controller, which builds it once from ``policy_kwargs``.
"""

from __future__ import annotations

import math
from typing import Any

#: The custom metrics each orchestrator replica reports (``_Orchestrator.record_autoscaling_stats``).
QUEUE_DEPTH = "queue_depth"
RUNS_IN_PROGRESS = "runs_in_progress"


class QueueDepthPolicy:
    def __init__(self, runs_per_replica: int) -> None:
        if runs_per_replica < 1:
            raise ValueError("runs_per_replica must be at least 1")
        self.runs_per_replica = runs_per_replica

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """The replica count Serve's ``AutoscalingContext`` ``ctx`` asks for (Serve bounds and delays it)."""
        metrics = ctx.aggregated_metrics or {}
        depths = list(metrics.get(QUEUE_DEPTH, {}).values())
        if not depths:
            return int(ctx.target_num_replicas), {}  # no replica has reported yet
        running = sum(metrics.get(RUNS_IN_PROGRESS, {}).values())
        work = max(*depths, running)  # every replica reads the same queue: its depth is not summed
        return math.ceil(work / self.runs_per_replica), {}
