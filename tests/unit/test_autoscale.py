"""The orchestrators' autoscaling policy, on Serve's own ``AutoscalingContext`` and with the bounds and
delays Serve wraps every custom policy in: replicas follow the queue's depth."""

from __future__ import annotations

import time

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from deploy.autoscale import QUEUE_DEPTH, RUNS_IN_PROGRESS, QueueDepthPolicy

DEPLOYMENT = DeploymentID(name="Orchestrator", app_name="caduceus")
REPLICAS = [ReplicaID(unique_id=f"r{n}", deployment_id=DEPLOYMENT) for n in range(4)]
CONFIG = AutoscalingConfig(min_replicas=1, max_replicas=3, upscale_delay_s=10, downscale_delay_s=60)


def context(
    target: int,
    depth: float | None,
    running: list[float] | None = None,
    *,
    now: float,
    state: dict | None = None,
) -> AutoscalingContext:
    reporting = REPLICAS[:target]
    metrics: dict[str, dict[ReplicaID, float]] = {}
    if depth is not None:
        metrics[QUEUE_DEPTH] = dict.fromkeys(reporting, depth)
        metrics[RUNS_IN_PROGRESS] = dict(zip(reporting, running or [0.0] * target, strict=True))
    return AutoscalingContext(
        deployment_id=DEPLOYMENT,
        deployment_name=DEPLOYMENT.name,
        app_name=DEPLOYMENT.app_name,
        current_num_replicas=target,
        target_num_replicas=target,
        running_replicas=reporting,
        total_num_requests=0.0,
        total_queued_requests=0.0,
        aggregated_metrics=metrics,
        raw_metrics={},
        capacity_adjusted_min_replicas=CONFIG.min_replicas,
        capacity_adjusted_max_replicas=CONFIG.max_replicas,
        policy_state=state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=CONFIG,
    )


def test_the_policy_asks_for_a_replica_per_runs_per_replica_of_work() -> None:
    policy = QueueDepthPolicy(runs_per_replica=4)
    assert policy(context(1, 3, now=0))[0] == 1
    assert policy(context(1, 9, now=0))[0] == 3
    assert policy(context(2, 1, [3, 2], now=0))[0] == 2  # five runs held, whatever one depth reading says
    assert policy(context(2, 0, now=0))[0] == 0  # Serve keeps the minimum
    assert policy(context(2, None, now=0))[0] == 2  # no replica reported yet: as it is


def test_as_serve_runs_it_a_burst_scales_up_after_the_delay_and_an_idle_queue_down_to_the_minimum() -> None:
    # Serve's wrapper measures its delays on the wall clock: delays of a fraction of a second here.
    config = CONFIG.model_copy(update={"upscale_delay_s": 0.2, "downscale_delay_s": 0.4})
    policy = _apply_autoscaling_config(QueueDepthPolicy(runs_per_replica=4))

    def ask(target: int, depth: float, state: dict) -> tuple[int, dict]:
        ctx = context(target, depth, now=0, state=state)
        ctx.config = config
        return policy(ctx)

    count, state = ask(1, 100, {})
    assert count == 1  # not yet: the burst must hold for upscale_delay_s
    time.sleep(0.25)
    count, state = ask(1, 100, state)
    assert count == 25  # 100 runs, 4 a replica (Serve bounds it to max_replicas afterwards)
    count, state = ask(3, 0, state)
    assert count == 3  # an idle queue: not before downscale_delay_s
    time.sleep(0.2)
    count, state = ask(3, 12, state)
    assert count == 3  # work came back within the delay: the lull is forgotten
    count, state = ask(3, 0, state)
    time.sleep(0.25)
    count, state = ask(3, 0, state)
    assert count == 3  # 0.25 s of this lull, less than the delay
    time.sleep(0.2)
    assert ask(3, 0, state)[0] == 1


def test_runs_per_replica_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        QueueDepthPolicy(runs_per_replica=0)
