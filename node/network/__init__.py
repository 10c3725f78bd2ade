"""Pod networking on one node: IP address management and the bridge/veth plumbing.

- ``ipam``    allocates pod IPs from the node's podCIDR, persisted in a JSON file (atomic writes).
- ``bridge``  a Linux bridge per node (``skiff0``) and a veth pair per pod; pod egress NAT.
"""
