"""rclpy adapters: parameters to config, topics to core calls. Nothing here holds algorithm code."""
from __future__ import annotations


def run_node(node_class, args=None):
    """Every node's main(): init a context, spin the node, clean up on Ctrl-C/SIGTERM or context shutdown;
    returns the node (destroyed), or None if it was never built.

    A SIGINT can shut the context down while the node is still being built or a callback is publishing;
    the RCLError that follows is a clean stop, not a crash. Any error while the context is still up is.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    node = None
    try:
        with rclpy.init(args=args):
            try:
                node = node_class()
                rclpy.spin(node)
            except Exception:
                if rclpy.ok():
                    raise
            finally:
                if node is not None:
                    node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return node
