"""The decision KEDA makes for the worker deployment, as code: from the depth of the queue to a
number of worker replicas. The benchmark (scenario 17) and the tests drive real workers with it,
so what a ScaledObject on the Redis (or RabbitMQ) queue does during a run is measured, not assumed.

KEDA runs two loops, both reproduced here. KEDA itself activates the deployment (0 -> 1) when the
trigger is active (queue length above `activationListLength`) and scales it back to 0 once the
trigger has been inactive for `cooldownPeriod`. Between 1 and `maxReplicaCount` it hands the
metric to the Horizontal Pod Autoscaler as an AverageValue target (`listLength` per replica),
which asks for ceil(length / target) replicas, leaves the count alone within 10% of the target,
scales up at once and scales down to the highest recommendation of its stabilization window.
Not modelled: the HPA's rate policies (by default at most double, or +4 pods, per 15 s up; the
manifests in deploy/kubernetes add 2 pods per 120 s down) and the intervals of the loops (KEDA polls every `pollingInterval`, 30 s; HPA syncs every 15 s): the
caller decides how often to ask."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# The HPA's default `--horizontal-pod-autoscaler-tolerance`.
HPA_TOLERANCE = 0.1


@dataclass(frozen=True)
class ScalingPolicy:
    """A ScaledObject's settings, under the names KEDA gives them.

    - `target`: messages waiting per replica: the Redis scaler's `listLength`, the RabbitMQ
      scaler's `value` with `mode: QueueLength` (KEDA's defaults: 5 and 20).
    - `activation`: `activationListLength` / `activationValue`: the trigger is active only above it.
    - `min_replicas`, `max_replicas`: `minReplicaCount` (0: scale to zero), `maxReplicaCount`.
    - `cooldown_s`: `cooldownPeriod`: inactive this long before going to zero.
    - `scale_down_window_s`: `advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.
      stabilizationWindowSeconds` (HPA's default 300 s).
    """

    target: int = 5
    activation: int = 0
    min_replicas: int = 0
    max_replicas: int = 100
    cooldown_s: float = 300.0
    scale_down_window_s: float = 300.0

    def __post_init__(self) -> None:
        if self.target < 1:
            raise ValueError(f"target must be at least 1, not {self.target}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"replicas must satisfy 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}), "
                             "max >= 1")
        if self.activation < 0 or self.cooldown_s < 0 or self.scale_down_window_s < 0:
            raise ValueError("activation, cooldown and the scale-down window cannot be negative")

    @classmethod
    def from_scaled_object(cls, document: dict[str, Any]) -> ScalingPolicy:
        """The policy of a KEDA ScaledObject (its parsed YAML) with one `redis` trigger, or one
        `rabbitmq` trigger in `QueueLength` mode; KEDA's defaults where a field is absent."""
        spec = document["spec"]
        triggers = spec.get("triggers") or []
        if len(triggers) != 1:
            raise ValueError(f"one trigger expected, found {len(triggers)}")
        kind, metadata = triggers[0]["type"], triggers[0].get("metadata") or {}
        if kind == "redis":
            target, activation = metadata.get("listLength", 5), metadata.get("activationListLength", 0)
        elif kind == "rabbitmq" and metadata.get("mode", "QueueLength") == "QueueLength":
            target, activation = metadata.get("value", 20), metadata.get("activationValue", 0)
        else:
            raise ValueError(f"a {kind} trigger (mode {metadata.get('mode')}) is not a queue length")
        behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
        window = (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds", 300)
        return cls(target=int(target), activation=int(activation), min_replicas=int(spec.get("minReplicaCount", 0)),
                   max_replicas=int(spec.get("maxReplicaCount", 100)), cooldown_s=float(spec.get("cooldownPeriod", 300)),
                   scale_down_window_s=float(window))

    @property
    def floor(self) -> int:
        """The fewest replicas the HPA asks for: it never goes below 1 (zero is KEDA's)."""
        return max(1, self.min_replicas)


def desired_replicas(queue_length: int, current: int, policy: ScalingPolicy) -> int:
    """The HPA's recommendation for one observation: ceil(queue_length / target) clamped to
    [max(1, min_replicas), max_replicas], or the current count while the queue is within the
    tolerance of what the current replicas target."""
    if current > 0 and abs(queue_length / (policy.target * current) - 1) <= HPA_TOLERANCE:
        wanted = current
    else:
        wanted = math.ceil(queue_length / policy.target)
    return max(policy.floor, min(policy.max_replicas, wanted))


@dataclass
class Autoscaler:
    """KEDA and the HPA together, observation by observation: `decide(now, queue_length)` returns
    the replica count to run from then on (`now` in seconds, any monotonic clock)."""

    policy: ScalingPolicy
    replicas: int = 0
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    _last_active: float | None = None

    def decide(self, now: float, queue_length: int) -> int:
        policy = self.policy
        active = queue_length > policy.activation
        if active:
            self._last_active = now
        if self.replicas == 0:
            # KEDA activates a deployment at zero; the HPA takes over from the next observation.
            self.replicas = policy.floor if active or policy.min_replicas > 0 else 0
            return self.replicas
        idle_for = math.inf if self._last_active is None else now - self._last_active
        if policy.min_replicas == 0 and not active and idle_for >= policy.cooldown_s:
            self._recommendations.clear()
            self.replicas = 0
            return 0
        recommendation = desired_replicas(queue_length, self.replicas, policy)
        self._recommendations.append((now, recommendation))
        while now - self._recommendations[0][0] > policy.scale_down_window_s:
            self._recommendations.popleft()
        if recommendation > self.replicas:
            self.replicas = recommendation  # no stabilization window for scaling up (HPA's default)
        else:
            # Down only as far as the highest recommendation of the window: a queue that dips for
            # a moment does not stop workers it will need again.
            self.replicas = min(self.replicas, max(r for _, r in self._recommendations))
        return self.replicas
