"""rclpy adapters: parameters to config, topics to core calls. Nothing here holds algorithm code."""
from __future__ import annotations


def run_node(node_class, args=None) -> None:
    """Every node's main(): init a context, spin the node, clean up on Ctrl-C/SIGTERM or context shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        with rclpy.init(args=args):
            node = node_class()
            try:
                rclpy.spin(node)
            except Exception:
                if rclpy.ok():
                    raise
                # SIGINT shut the context down under a running callback (its publish fails): a clean stop
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
