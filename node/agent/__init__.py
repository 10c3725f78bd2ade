"""The node agent (skiff's kubelet). Modules, bottom up (each states its own contract):

- ``plan``       pure: ``plan(desired, actual, now, backoff) -> actions`` and crash-loop backoff.
- ``status``     pure: the pod's status (phase, conditions, container states) from the runtime.
- ``probes``     startup/liveness/readiness probes: threshold state (pure), per-container tasks.
- ``volumes``    emptyDir, hostPath, configMap and secret volumes on the host.
- ``podworker``  one task per pod: observe the runtime, plan, act through CRI, write status.
- ``node``       the Node object, its status and the node Lease.
- ``service``    the node service: container logs and exec for administrators.
- ``agent``      wires them together; ``deploy/cli/agent_cmd.py`` is ``skiff agent``.
"""
