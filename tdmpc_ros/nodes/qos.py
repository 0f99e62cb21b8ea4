"""QoS profiles shared by publishers and subscribers, so both ends always match."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Every control step must reach the learner: reliable, and deep enough for seconds of backlog at 50 Hz.
TRANSITIONS = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# Latest-value topics (goal, model updates): late joiners get the last message.
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Joint states and commands: the newest sample matters.
STATE = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

MAX_QUEUE_DEPTH = 5000
"""Deepest subscriber queue that still drops its oldest message when full. A Fast DDS reader holds at most 5000
samples (its default resource limit, kept by rmw_fastrtps): past that it stops acknowledging, so a reliable
writer blocks and then fails to publish ("cannot publish data"), which a publisher (a controller) must never."""


def transitions_queue(depth: int) -> QoSProfile:
    """TRANSITIONS for a subscriber that queues up to `depth` messages (at most MAX_QUEUE_DEPTH; depth is each
    end's own, so it still matches)."""
    return QoSProfile(depth=min(depth, MAX_QUEUE_DEPTH), history=TRANSITIONS.history,
                      reliability=TRANSITIONS.reliability)


def model_weights(depth: int) -> QoSProfile:
    """Model weights (msg/ModelWeights, one piece of a checkpoint per message): reliable and transient local. The
    learner keeps `depth` = one model's pieces, so a controller that starts late gets the newest complete model
    from DDS alone; a reader needs at least that depth too, since a late joiner receives them all at once. Both
    capped at MAX_QUEUE_DEPTH (see there)."""
    return QoSProfile(depth=min(depth, MAX_QUEUE_DEPTH), history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
