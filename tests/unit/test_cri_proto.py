"""skiff's CRI subset must match Kubernetes' runtime.v1 on the wire.

The table below was looked up in k8s.io/cri-api pkg/apis/runtime/v1/api.proto; a typo in a field
number in protos/cri/runtime/v1/api.proto would silently break talking to a kubelet, crictl or
containerd, so every number that skiff declares is checked here.
"""
from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc

# (message, field, number) as in CRI's api.proto.
FIELDS: list[tuple[str, str, int]] = [
    ("VersionRequest", "version", 1),
    ("VersionResponse", "version", 1), ("VersionResponse", "runtime_name", 2),
    ("VersionResponse", "runtime_version", 3), ("VersionResponse", "runtime_api_version", 4),
    ("DNSConfig", "servers", 1), ("DNSConfig", "searches", 2), ("DNSConfig", "options", 3),
    ("PortMapping", "protocol", 1), ("PortMapping", "container_port", 2),
    ("PortMapping", "host_port", 3), ("PortMapping", "host_ip", 4),
    ("Mount", "container_path", 1), ("Mount", "host_path", 2), ("Mount", "readonly", 3),
    ("Mount", "selinux_relabel", 4), ("Mount", "propagation", 5),
    ("NamespaceOption", "network", 1), ("NamespaceOption", "pid", 2),
    ("NamespaceOption", "ipc", 3), ("NamespaceOption", "target_id", 4),
    ("Int64Value", "value", 1), ("UInt64Value", "value", 1),
    ("LinuxSandboxSecurityContext", "namespace_options", 1),
    ("LinuxSandboxSecurityContext", "selinux_options", 2),
    ("LinuxSandboxSecurityContext", "run_as_user", 3),
    ("LinuxSandboxSecurityContext", "readonly_rootfs", 4),
    ("LinuxSandboxSecurityContext", "supplemental_groups", 5),
    ("LinuxSandboxSecurityContext", "privileged", 6),
    ("LinuxSandboxSecurityContext", "run_as_group", 8),
    ("LinuxSandboxSecurityContext", "seccomp", 9),
    ("LinuxSandboxSecurityContext", "apparmor", 10),
    ("SecurityProfile", "profile_type", 1), ("SecurityProfile", "localhost_ref", 2),
    ("LinuxPodSandboxConfig", "cgroup_parent", 1), ("LinuxPodSandboxConfig", "security_context", 2),
    ("LinuxPodSandboxConfig", "sysctls", 3), ("LinuxPodSandboxConfig", "overhead", 4),
    ("LinuxPodSandboxConfig", "resources", 5),
    ("PodSandboxMetadata", "name", 1), ("PodSandboxMetadata", "uid", 2),
    ("PodSandboxMetadata", "namespace", 3), ("PodSandboxMetadata", "attempt", 4),
    ("PodSandboxConfig", "metadata", 1), ("PodSandboxConfig", "hostname", 2),
    ("PodSandboxConfig", "log_directory", 3), ("PodSandboxConfig", "dns_config", 4),
    ("PodSandboxConfig", "port_mappings", 5), ("PodSandboxConfig", "labels", 6),
    ("PodSandboxConfig", "annotations", 7), ("PodSandboxConfig", "linux", 8),
    ("RunPodSandboxRequest", "config", 1), ("RunPodSandboxRequest", "runtime_handler", 2),
    ("RunPodSandboxResponse", "pod_sandbox_id", 1),
    ("StopPodSandboxRequest", "pod_sandbox_id", 1), ("RemovePodSandboxRequest", "pod_sandbox_id", 1),
    ("PodSandboxStatusRequest", "pod_sandbox_id", 1), ("PodSandboxStatusRequest", "verbose", 2),
    ("PodIP", "ip", 1),
    ("PodSandboxNetworkStatus", "ip", 1), ("PodSandboxNetworkStatus", "additional_ips", 2),
    ("Namespace", "options", 2), ("LinuxPodSandboxStatus", "namespaces", 1),
    ("PodSandboxStatus", "id", 1), ("PodSandboxStatus", "metadata", 2),
    ("PodSandboxStatus", "state", 3), ("PodSandboxStatus", "created_at", 4),
    ("PodSandboxStatus", "network", 5), ("PodSandboxStatus", "linux", 6),
    ("PodSandboxStatus", "labels", 7), ("PodSandboxStatus", "annotations", 8),
    ("PodSandboxStatus", "runtime_handler", 9),
    ("PodSandboxStatusResponse", "status", 1), ("PodSandboxStatusResponse", "info", 2),
    ("PodSandboxStatusResponse", "containers_statuses", 3), ("PodSandboxStatusResponse", "timestamp", 4),
    ("PodSandboxStateValue", "state", 1),
    ("PodSandboxFilter", "id", 1), ("PodSandboxFilter", "state", 2),
    ("PodSandboxFilter", "label_selector", 3),
    ("ListPodSandboxRequest", "filter", 1),
    ("PodSandbox", "id", 1), ("PodSandbox", "metadata", 2), ("PodSandbox", "state", 3),
    ("PodSandbox", "created_at", 4), ("PodSandbox", "labels", 5), ("PodSandbox", "annotations", 6),
    ("PodSandbox", "runtime_handler", 7),
    ("ListPodSandboxResponse", "items", 1),
    ("ImageSpec", "image", 1), ("ImageSpec", "annotations", 2),
    ("ImageSpec", "user_specified_image", 18), ("ImageSpec", "runtime_handler", 19),
    ("KeyValue", "key", 1), ("KeyValue", "value", 2),
    ("LinuxContainerResources", "cpu_period", 1), ("LinuxContainerResources", "cpu_quota", 2),
    ("LinuxContainerResources", "cpu_shares", 3), ("LinuxContainerResources", "memory_limit_in_bytes", 4),
    ("LinuxContainerResources", "oom_score_adj", 5), ("LinuxContainerResources", "cpuset_cpus", 6),
    ("LinuxContainerResources", "cpuset_mems", 7), ("LinuxContainerResources", "hugepage_limits", 8),
    ("LinuxContainerResources", "unified", 9),
    ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10),
    ("HugepageLimit", "page_size", 1), ("HugepageLimit", "limit", 2),
    ("SELinuxOption", "user", 1), ("SELinuxOption", "role", 2), ("SELinuxOption", "type", 3),
    ("SELinuxOption", "level", 4),
    ("Capability", "add_capabilities", 1), ("Capability", "drop_capabilities", 2),
    ("Capability", "add_ambient_capabilities", 3),
    ("LinuxContainerSecurityContext", "capabilities", 1),
    ("LinuxContainerSecurityContext", "privileged", 2),
    ("LinuxContainerSecurityContext", "namespace_options", 3),
    ("LinuxContainerSecurityContext", "selinux_options", 4),
    ("LinuxContainerSecurityContext", "run_as_user", 5),
    ("LinuxContainerSecurityContext", "run_as_username", 6),
    ("LinuxContainerSecurityContext", "readonly_rootfs", 7),
    ("LinuxContainerSecurityContext", "supplemental_groups", 8),
    ("LinuxContainerSecurityContext", "no_new_privs", 11),
    ("LinuxContainerSecurityContext", "run_as_group", 12),
    ("LinuxContainerSecurityContext", "masked_paths", 13),
    ("LinuxContainerSecurityContext", "readonly_paths", 14),
    ("LinuxContainerSecurityContext", "seccomp", 15),
    ("LinuxContainerSecurityContext", "apparmor", 16),
    ("LinuxContainerConfig", "resources", 1), ("LinuxContainerConfig", "security_context", 2),
    ("ContainerMetadata", "name", 1), ("ContainerMetadata", "attempt", 2),
    ("Device", "container_path", 1), ("Device", "host_path", 2), ("Device", "permissions", 3),
    ("ContainerConfig", "metadata", 1), ("ContainerConfig", "image", 2),
    ("ContainerConfig", "command", 3), ("ContainerConfig", "args", 4),
    ("ContainerConfig", "working_dir", 5), ("ContainerConfig", "envs", 6),
    ("ContainerConfig", "mounts", 7), ("ContainerConfig", "devices", 8),
    ("ContainerConfig", "labels", 9), ("ContainerConfig", "annotations", 10),
    ("ContainerConfig", "log_path", 11), ("ContainerConfig", "stdin", 12),
    ("ContainerConfig", "stdin_once", 13), ("ContainerConfig", "tty", 14),
    ("ContainerConfig", "linux", 15),
    ("CreateContainerRequest", "pod_sandbox_id", 1), ("CreateContainerRequest", "config", 2),
    ("CreateContainerRequest", "sandbox_config", 3),
    ("CreateContainerResponse", "container_id", 1),
    ("StartContainerRequest", "container_id", 1),
    ("StopContainerRequest", "container_id", 1), ("StopContainerRequest", "timeout", 2),
    ("RemoveContainerRequest", "container_id", 1),
    ("ContainerStateValue", "state", 1),
    ("ContainerFilter", "id", 1), ("ContainerFilter", "state", 2),
    ("ContainerFilter", "pod_sandbox_id", 3), ("ContainerFilter", "label_selector", 4),
    ("ListContainersRequest", "filter", 1),
    ("Container", "id", 1), ("Container", "pod_sandbox_id", 2), ("Container", "metadata", 3),
    ("Container", "image", 4), ("Container", "image_ref", 5), ("Container", "state", 6),
    ("Container", "created_at", 7), ("Container", "labels", 8), ("Container", "annotations", 9),
    ("Container", "image_id", 10),
    ("ListContainersResponse", "containers", 1),
    ("ContainerStatusRequest", "container_id", 1), ("ContainerStatusRequest", "verbose", 2),
    ("ContainerStatus", "id", 1), ("ContainerStatus", "metadata", 2), ("ContainerStatus", "state", 3),
    ("ContainerStatus", "created_at", 4), ("ContainerStatus", "started_at", 5),
    ("ContainerStatus", "finished_at", 6), ("ContainerStatus", "exit_code", 7),
    ("ContainerStatus", "image", 8), ("ContainerStatus", "image_ref", 9),
    ("ContainerStatus", "reason", 10), ("ContainerStatus", "message", 11),
    ("ContainerStatus", "labels", 12), ("ContainerStatus", "annotations", 13),
    ("ContainerStatus", "mounts", 14), ("ContainerStatus", "log_path", 15),
    ("ContainerStatus", "resources", 16), ("ContainerStatus", "image_id", 17),
    ("ContainerStatusResponse", "status", 1), ("ContainerStatusResponse", "info", 2),
    ("ContainerResources", "linux", 1),
    ("UpdateContainerResourcesRequest", "container_id", 1),
    ("UpdateContainerResourcesRequest", "linux", 2),
    ("UpdateContainerResourcesRequest", "annotations", 4),
    ("ExecSyncRequest", "container_id", 1), ("ExecSyncRequest", "cmd", 2),
    ("ExecSyncRequest", "timeout", 3),
    ("ExecSyncResponse", "stdout", 1), ("ExecSyncResponse", "stderr", 2),
    ("ExecSyncResponse", "exit_code", 3),
    ("ImageFilter", "image", 1), ("ListImagesRequest", "filter", 1),
    ("Image", "id", 1), ("Image", "repo_tags", 2), ("Image", "repo_digests", 3),
    ("Image", "size", 4), ("Image", "uid", 5), ("Image", "username", 6), ("Image", "spec", 7),
    ("Image", "pinned", 8),
    ("ListImagesResponse", "images", 1),
    ("ImageStatusRequest", "image", 1), ("ImageStatusRequest", "verbose", 2),
    ("ImageStatusResponse", "image", 1), ("ImageStatusResponse", "info", 2),
    ("AuthConfig", "username", 1), ("AuthConfig", "password", 2), ("AuthConfig", "auth", 3),
    ("AuthConfig", "server_address", 4), ("AuthConfig", "identity_token", 5),
    ("AuthConfig", "registry_token", 6),
    ("PullImageRequest", "image", 1), ("PullImageRequest", "auth", 2),
    ("PullImageRequest", "sandbox_config", 3),
    ("PullImageResponse", "image_ref", 1),
    ("RemoveImageRequest", "image", 1),
    ("RuntimeCondition", "type", 1), ("RuntimeCondition", "status", 2),
    ("RuntimeCondition", "reason", 3), ("RuntimeCondition", "message", 4),
    ("RuntimeStatus", "conditions", 1),
    ("StatusRequest", "verbose", 1),
    ("StatusResponse", "status", 1), ("StatusResponse", "info", 2),
    ("StatusResponse", "runtime_handlers", 3),
    ("RuntimeHandler", "name", 1), ("RuntimeHandler", "features", 2),
    ("RuntimeHandlerFeatures", "recursive_read_only_mounts", 1),
    ("RuntimeHandlerFeatures", "user_namespaces", 2),
    ("FilesystemIdentifier", "mountpoint", 1),
    ("FilesystemUsage", "timestamp", 1), ("FilesystemUsage", "fs_id", 2),
    ("FilesystemUsage", "used_bytes", 3), ("FilesystemUsage", "inodes_used", 4),
    ("ImageFsInfoResponse", "image_filesystems", 1),
    ("ImageFsInfoResponse", "container_filesystems", 2),
    ("ContainerStatsRequest", "container_id", 1), ("ContainerStatsResponse", "stats", 1),
    ("ContainerAttributes", "id", 1), ("ContainerAttributes", "metadata", 2),
    ("ContainerAttributes", "labels", 3), ("ContainerAttributes", "annotations", 4),
    ("ContainerStats", "attributes", 1), ("ContainerStats", "cpu", 2),
    ("ContainerStats", "memory", 3), ("ContainerStats", "writable_layer", 4),
    ("ContainerStats", "swap", 5),
    ("CpuUsage", "timestamp", 1), ("CpuUsage", "usage_core_nano_seconds", 2),
    ("CpuUsage", "usage_nano_cores", 3),
    ("MemoryUsage", "timestamp", 1), ("MemoryUsage", "working_set_bytes", 2),
    ("MemoryUsage", "available_bytes", 3), ("MemoryUsage", "usage_bytes", 4),
    ("MemoryUsage", "rss_bytes", 5), ("MemoryUsage", "page_faults", 6),
    ("MemoryUsage", "major_page_faults", 7),
    ("SwapUsage", "timestamp", 1), ("SwapUsage", "swap_available_bytes", 2),
    ("SwapUsage", "swap_usage_bytes", 3),
]

ENUMS: dict[str, dict[str, int]] = {
    "Protocol": {"TCP": 0, "UDP": 1, "SCTP": 2},
    "MountPropagation": {"PROPAGATION_PRIVATE": 0, "PROPAGATION_HOST_TO_CONTAINER": 1,
                         "PROPAGATION_BIDIRECTIONAL": 2},
    "NamespaceMode": {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3},
    "PodSandboxState": {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1},
    "ContainerState": {"CONTAINER_CREATED": 0, "CONTAINER_RUNNING": 1, "CONTAINER_EXITED": 2,
                       "CONTAINER_UNKNOWN": 3},
}

RUNTIME_METHODS = [
    "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
    "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
    "ListContainers", "ContainerStatus", "UpdateContainerResources", "ExecSync", "ContainerStats",
    "Status",
]
IMAGE_METHODS = ["ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"]


@pytest.mark.parametrize(("message", "field", "number"), FIELDS)
def test_field_number(message: str, field: str, number: int) -> None:
    descriptor = api_pb2.DESCRIPTOR.message_types_by_name[message]
    assert field in descriptor.fields_by_name, f"{message}.{field} is missing"
    assert descriptor.fields_by_name[field].number == number


def test_every_declared_field_is_in_the_table() -> None:
    """A field added to the .proto without looking up its CRI number fails here."""
    checked = {(m, f) for m, f, _ in FIELDS}
    declared = {(name, field.name)
                for name, message in api_pb2.DESCRIPTOR.message_types_by_name.items()
                for field in message.fields}
    assert declared - checked == set()


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values(enum: str) -> None:
    descriptor = api_pb2.DESCRIPTOR.enum_types_by_name[enum]
    assert {v.name: v.number for v in descriptor.values} == ENUMS[enum]


def test_security_profile_types() -> None:
    values = api_pb2.SecurityProfile.DESCRIPTOR.enum_types_by_name["ProfileType"].values
    assert {v.name: v.number for v in values} == {"RuntimeDefault": 0, "Unconfined": 1, "Localhost": 2}


def test_map_and_repeated_shapes() -> None:
    labels = api_pb2.PodSandboxConfig.DESCRIPTOR.fields_by_name["labels"]
    assert labels.message_type.GetOptions().map_entry
    envs = api_pb2.ContainerConfig.DESCRIPTOR.fields_by_name["envs"]
    assert envs.is_repeated and envs.message_type.name == "KeyValue"
    assert api_pb2.Image.DESCRIPTOR.fields_by_name["size"].type == FieldDescriptor.TYPE_UINT64


def test_package_services_and_methods() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    services = api_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"RuntimeService", "ImageService"}
    assert [m.name for m in services["RuntimeService"].methods] == RUNTIME_METHODS
    assert [m.name for m in services["ImageService"].methods] == IMAGE_METHODS
    assert services["ImageService"].full_name == "runtime.v1.ImageService"
    pull = services["ImageService"].methods_by_name["PullImage"]
    assert (pull.input_type.name, pull.output_type.name) == ("PullImageRequest", "PullImageResponse")
    assert hasattr(api_pb2_grpc, "ImageServiceServicer") and hasattr(api_pb2_grpc, "RuntimeServiceStub")


def test_wire_bytes_of_a_known_message() -> None:
    """PullImageResponse{image_ref: "sha256:ab"}: field 1, length-delimited."""
    data = api_pb2.PullImageResponse(image_ref="sha256:ab").SerializeToString()
    assert data == b"\x0a\x09sha256:ab"
