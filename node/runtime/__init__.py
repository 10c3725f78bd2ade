"""skiff's container runtime: the execution half of the CRI server.

Modules, bottom up (each states its own contract):

- ``logs``     CRI log format: a writer that frames a container's stdout/stderr into
               ``<RFC3339Nano> <stream> <P|F> <content>`` lines, and a reader that tails them.
- ``cgroups``  cgroup v1 (and v2 where it has controllers) reading: memory usage, OOM kills,
               CPU usage; removal of empty pod cgroups.
- ``oci``      pure: the OCI runtime spec (config.json) for a pod's pause process and for a
               container, from the image config and the request.
- ``rootfs``   overlayfs mounts of image layers for one container.
- ``runc``     drives ``runc``; each container is supervised by a small detached shim process
               that owns its stdio (into the CRI log) and records its exit status on disk.
- ``sandbox``  pod sandboxes (a pinned network namespace plus a pause container holding IPC,
               UTS and optionally PID namespaces); state lives on disk so a restarted runtime
               re-adopts what is running.
- ``containers`` the containers that run in a sandbox (runc, overlay rootfs, shim, exit status).
- ``handlers`` the RuntimeClass handlers behind one protocol: ``runc`` (sandbox + containers),
               ``process`` (``process.py``: host processes) and ``fake`` (``fake.py``: hollow).
- ``server``   the CRI RuntimeService over the handlers, with the ImageService (``images``),
               on a unix socket; ``client`` opens a CRI channel (skiff's runtime or containerd).

Pod networking (bridge, veth, IPAM) is in ``node.network``.
"""
