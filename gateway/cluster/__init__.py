"""Cluster mode (``--redis URL``; docs/cluster.md): homogeneous nodes, Redis as node
registry, directory and message bus, in LiveKit's manner.

- ``node.py``: this node's membership: register with a heartbeat (TTL), state
  (serving/draining) and load; the cached view of the other nodes; placement; the
  directory (consultation id, customer link and token **hashes** → node).
- Nothing here is on the media path: media never waits for Redis. Redis is asked when a
  consultation is created or ended, when a door (a link, WHIP/WHEP, the events socket,
  RTMP connect) is knocked on at a node that does not hold the consultation, and by the
  heartbeat.
"""

from gateway.cluster.node import ClusterNode, NodeInfo, identifier_key

__all__ = ["ClusterNode", "NodeInfo", "identifier_key"]
