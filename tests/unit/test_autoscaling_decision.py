"""The KEDA decision (services/autoscaling.py) against values computed by hand: ceil(queue /
target) within [max(1, min), max], the HPA's 10% tolerance, activation from zero, the scale-down
stabilization window and the cooldown back to zero; and the policy of the ScaledObjects shipped
in deploy/kubernetes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.autoscaling import Autoscaler, ScalingPolicy, desired_replicas


@pytest.mark.parametrize(("queue", "current", "expected"), [
    (0, 1, 1),        # the HPA never asks for fewer than one replica
    (1, 1, 1),
    (100, 1, 1),      # exactly the target
    (101, 1, 1),      # 1.01 of the target per replica: within 10%, the current replica stays
    (250, 2, 3),      # 250 / (100 x 2) = 1.25: outside the tolerance, ceil(2.5) = 3
    (2_000, 1, 4),    # 20 wanted, capped at max 4
    (390, 4, 4),      # 390 / 400 = 0.975: within 10% of what 4 replicas target, stays 4
    (350, 4, 4),      # 0.875: outside, ceil(3.5) = 4
    (290, 4, 3),      # ceil(2.9) = 3
    (109, 1, 1),      # 1.09: within the tolerance, stays 1
    (111, 1, 2),      # 1.11: past it
])
def test_desired_replicas_is_the_queue_over_the_target_clamped_with_the_hpa_tolerance(queue, current, expected):
    policy = ScalingPolicy(target=100, min_replicas=0, max_replicas=4)
    assert desired_replicas(queue, current, policy) == expected


def test_the_minimum_holds_even_with_an_empty_queue():
    assert desired_replicas(0, 5, ScalingPolicy(target=10, min_replicas=3, max_replicas=8)) == 3


def test_from_zero_keda_activates_one_replica_then_the_hpa_scales_up_at_once():
    scaler = Autoscaler(ScalingPolicy(target=1_000, max_replicas=4, cooldown_s=10, scale_down_window_s=5))
    assert scaler.decide(0, 0) == 0           # inactive: stays at zero
    assert scaler.decide(1, 10_000) == 1      # active: KEDA scales 0 -> 1
    assert scaler.decide(2, 10_000) == 4      # the HPA: ceil(10) = 10, capped at 4


def test_the_activation_threshold_keeps_a_small_queue_at_zero():
    scaler = Autoscaler(ScalingPolicy(target=10, activation=50))
    assert scaler.decide(0, 50) == 0
    assert scaler.decide(1, 51) == 1


def test_scale_down_waits_for_the_highest_recommendation_of_the_window():
    scaler = Autoscaler(ScalingPolicy(target=100, max_replicas=4, scale_down_window_s=5, cooldown_s=60), replicas=4)
    assert scaler.decide(0, 400) == 4
    # The queue falls to 150 (ceil 1.5 = 2) but 4 was recommended 0-5 s ago: stay at 4.
    assert scaler.decide(1, 150) == 4
    assert scaler.decide(5, 150) == 4
    assert scaler.decide(6, 150) == 2         # the 4 of t=0 left the window; 2 since t=1
    assert scaler.decide(7, 500) == 4         # up: at once


def test_back_to_zero_only_after_the_cooldown_and_not_below_the_minimum():
    policy = ScalingPolicy(target=100, max_replicas=4, scale_down_window_s=0, cooldown_s=10)
    scaler = Autoscaler(policy, replicas=2)
    assert scaler.decide(0, 200) == 2
    assert scaler.decide(1, 0) == 1           # inactive: the HPA's floor of one until the cooldown ends
    assert scaler.decide(9.5, 0) == 1         # last active at t=0
    assert scaler.decide(10, 0) == 0
    assert scaler.decide(11, 1) == 1          # active again: KEDA activates one replica
    kept = Autoscaler(ScalingPolicy(target=100, min_replicas=1, cooldown_s=0, scale_down_window_s=0), replicas=3)
    assert kept.decide(0, 0) == 1             # minReplicaCount 1: never zero


def test_a_policy_keda_would_refuse_is_refused():
    with pytest.raises(ValueError):
        ScalingPolicy(target=0)
    with pytest.raises(ValueError):
        ScalingPolicy(min_replicas=3, max_replicas=2)


@pytest.mark.parametrize("manifest", ["keda-redis.yaml", "keda-rabbitmq.yaml"])
def test_the_shipped_scaled_objects_add_a_worker_per_500_samples_waiting_and_keep_one(manifest):
    path = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / manifest
    (scaled_object,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ScaledObject"]
    policy = ScalingPolicy.from_scaled_object(scaled_object)
    assert policy == ScalingPolicy(target=500, activation=0, min_replicas=1, max_replicas=20, cooldown_s=300,
                                   scale_down_window_s=600)
    scaler = Autoscaler(policy, replicas=1)
    assert scaler.decide(0, 2_600) == 6       # ceil(5.2)
    assert scaler.decide(15, 10_000) == 20    # the submit window's 10,000: the maximum exactly
    assert scaler.decide(30, 0) == 20         # the queue emptied: 20 was asked for 15 s ago
    assert scaler.decide(615, 0) == 20        # 600 s ago: still inside the window
    assert scaler.decide(616, 0) == 1         # the last high recommendation has left it; never zero


def test_a_trigger_that_is_not_a_queue_length_is_refused():
    document = {"spec": {"triggers": [{"type": "rabbitmq", "metadata": {"mode": "MessageRate", "value": "5"}}]}}
    with pytest.raises(ValueError, match="not a queue length"):
        ScalingPolicy.from_scaled_object(document)
