"""Services and Endpoints.

Kubernetes' rules (core/validation ValidateService), with its messages:
- type ClusterIP|NodePort|LoadBalancer|ExternalName; sessionAffinity None|ClientIP (ClientIP
  with a timeout of 1..86400 s; None with no config);
- ports required unless headless or ExternalName; with more than one port each needs a name
  (a DNS-1123 label, unique); port 1-65535; protocol TCP|UDP|SCTP; (protocol, port) unique;
  targetPort a port number or an IANA service name;
- nodePort only for NodePort and LoadBalancer services, 1-65535, (protocol, nodePort) unique;
- clusterIP "None" (headless) only for type ClusterIP; otherwise a valid IP; clusterIPs[0]
  must equal clusterIP; ExternalName services have no cluster IP and need an externalName;
- externalIPs valid IPs; loadBalancerSourceRanges only for LoadBalancer; external traffic
  policy only for NodePort/LoadBalancer; internal traffic policy and IP families from their enums;
- selector labels valid;
- on update, a set clusterIP is immutable (except to or from ExternalName).
Endpoints: addresses are IPs, ports valid with protocols, names required when several ports.
"""
from __future__ import annotations

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.field import ErrorList, GoLiteral, Path, go_quote
from controlplane.apiserver.validation.meta import validate_port_num_or_name
from protos.skiff.api.v1 import core_pb2

SPEC = Path("spec")
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
AFFINITIES = ("ClientIP", "None")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
MAX_CLIENT_IP_TIMEOUT = 86400


def _go_port_key(protocol: str, port: int) -> GoLiteral:
    """The ServicePort{Protocol, Port} Kubernetes prints for a duplicate port."""
    return GoLiteral(f"core.ServicePort{{Name:\"\", Protocol:{go_quote(protocol)}, AppProtocol:(*string)(nil), "
                     f"Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}")


def _choice(errs: ErrorList, path: Path, value: str, supported: tuple[str, ...]) -> None:
    if not value:
        errs.required(path)
    elif value not in supported:
        errs.not_supported(path, value, supported)


def validate_service(errs: ErrorList, svc: core_pb2.Service) -> None:
    spec = svc.spec
    _choice(errs, SPEC.child("type"), spec.type, SERVICE_TYPES)
    _choice(errs, SPEC.child("sessionAffinity"), spec.session_affinity, AFFINITIES)
    _validate_affinity_config(errs, spec)
    headless = spec.cluster_ip == "None"
    if spec.type == "ExternalName":
        _validate_external_name(errs, spec)
    elif not spec.ports and not headless:
        errs.required(SPEC.child("ports"))
    _validate_ports(errs, spec)
    _validate_cluster_ips(errs, spec)
    names.validate_labels(errs, SPEC.child("selector"), spec.selector)
    for i, ip in enumerate(spec.external_ips):
        errs.invalid_each(SPEC.child("externalIPs").index(i), ip, names.is_valid_ip(ip))
    if spec.load_balancer_source_ranges and spec.type != "LoadBalancer":
        errs.forbidden(SPEC.child("loadBalancerSourceRanges"), "may only be used when `type` is 'LoadBalancer'")
    for i, cidr in enumerate(spec.load_balancer_source_ranges):
        errs.invalid_each(SPEC.child("loadBalancerSourceRanges").index(i), cidr, names.is_valid_cidr(cidr))
    _validate_traffic_policies(errs, spec)


def _validate_affinity_config(errs: ErrorList, spec: core_pb2.ServiceSpec) -> None:
    path = SPEC.child("sessionAffinityConfig")
    if spec.session_affinity == "ClientIP":
        cfg = spec.session_affinity_config
        if not spec.HasField("session_affinity_config") or not cfg.client_ip.HasField("timeout_seconds"):
            errs.required(path, "must be set when session affinity is ClientIP")
        elif not 0 < cfg.client_ip.timeout_seconds <= MAX_CLIENT_IP_TIMEOUT:
            errs.invalid(path.child("clientIP", "timeoutSeconds"), cfg.client_ip.timeout_seconds,
                         f"must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}")
    elif spec.session_affinity == "None" and spec.HasField("session_affinity_config"):
        errs.invalid(path, GoLiteral("&core.SessionAffinityConfig{...}"), "must not be set when session affinity is None")


def _validate_external_name(errs: ErrorList, spec: core_pb2.ServiceSpec) -> None:
    if spec.cluster_ip or spec.cluster_ips:
        errs.forbidden(SPEC.child("clusterIPs"), "may not be set for ExternalName services")
    if spec.ip_families:
        errs.forbidden(SPEC.child("ipFamilies"), "may not be set for ExternalName services")
    if spec.HasField("ip_family_policy"):
        errs.forbidden(SPEC.child("ipFamilyPolicy"), "may not be set for ExternalName services")
    if not spec.external_name:
        errs.required(SPEC.child("externalName"))
    else:
        errs.invalid_each(SPEC.child("externalName"), spec.external_name,
                          names.is_dns1123_subdomain(spec.external_name.removesuffix(".")))


def _validate_ports(errs: ErrorList, spec: core_pb2.ServiceSpec) -> None:
    ports_path = SPEC.child("ports")
    require_name = len(spec.ports) > 1
    port_names: set[str] = set()
    seen_ports: set[tuple[str, int]] = set()
    seen_node_ports: set[tuple[str, int]] = set()
    for i, sp in enumerate(spec.ports):
        p = ports_path.index(i)
        if require_name and not sp.name:
            errs.required(p.child("name"))
        elif sp.name:
            errs.invalid_each(p.child("name"), sp.name, names.is_dns1123_label(sp.name))
            if sp.name in port_names:
                errs.duplicate(p.child("name"), sp.name)
            port_names.add(sp.name)
        errs.invalid_each(p.child("port"), sp.port, names.is_valid_port_num(sp.port))
        _choice(errs, p.child("protocol"), sp.protocol, PROTOCOLS)
        if spec.type != "ExternalName":
            validate_port_num_or_name(errs, sp.target_port, p.child("targetPort"))
        if sp.HasField("app_protocol"):
            errs.invalid_each(p.child("appProtocol"), sp.app_protocol, names.is_qualified_name(sp.app_protocol))
        if (sp.protocol, sp.port) in seen_ports:
            errs.duplicate(p, _go_port_key(sp.protocol, sp.port))
        seen_ports.add((sp.protocol, sp.port))
        if sp.node_port:
            if spec.type not in ("NodePort", "LoadBalancer"):
                errs.forbidden(p.child("nodePort"), f"may not be used when `type` is '{spec.type}'")
            errs.invalid_each(p.child("nodePort"), sp.node_port, names.is_valid_port_num(sp.node_port))
            if (sp.protocol, sp.node_port) in seen_node_ports:
                errs.duplicate(p.child("nodePort"), sp.node_port)
            seen_node_ports.add((sp.protocol, sp.node_port))


def _validate_cluster_ips(errs: ErrorList, spec: core_pb2.ServiceSpec) -> None:
    if spec.type == "ExternalName":
        return
    ips_path = SPEC.child("clusterIPs")
    if spec.cluster_ips and spec.cluster_ip and spec.cluster_ips[0] != spec.cluster_ip:
        errs.invalid(ips_path, list(spec.cluster_ips), "first value must match `clusterIP`")
    ips = list(spec.cluster_ips) or ([spec.cluster_ip] if spec.cluster_ip else [])
    for i, ip in enumerate(ips):
        if ip == "None":
            if i == 0 and spec.type != "ClusterIP":
                errs.invalid(ips_path.index(0), ip, f"may not be set to 'None' for {spec.type} services")
            elif i > 0:
                errs.invalid(ips_path.index(i), ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
            continue
        errs.invalid_each(ips_path.index(i), ip, names.is_valid_ip(ip))
    for i, family in enumerate(spec.ip_families):
        if family not in IP_FAMILIES:
            errs.not_supported(SPEC.child("ipFamilies").index(i), family, IP_FAMILIES)
    if spec.HasField("ip_family_policy") and spec.ip_family_policy not in IP_FAMILY_POLICIES:
        errs.not_supported(SPEC.child("ipFamilyPolicy"), spec.ip_family_policy, IP_FAMILY_POLICIES)


def _validate_traffic_policies(errs: ErrorList, spec: core_pb2.ServiceSpec) -> None:
    external = spec.type in ("NodePort", "LoadBalancer")
    etp = spec.external_traffic_policy
    if etp and not external:
        errs.forbidden(SPEC.child("externalTrafficPolicy"), "may only be set for externally-accessible services")
    elif external:
        _choice(errs, SPEC.child("externalTrafficPolicy"), etp, TRAFFIC_POLICIES)
    if spec.HasField("internal_traffic_policy") and spec.internal_traffic_policy not in TRAFFIC_POLICIES:
        errs.not_supported(SPEC.child("internalTrafficPolicy"), spec.internal_traffic_policy, TRAFFIC_POLICIES)


def validate_service_update(errs: ErrorList, new: core_pb2.Service, old: core_pb2.Service) -> None:
    """A cluster IP, once set, stays (unless the service becomes or stops being ExternalName)."""
    if "ExternalName" in (new.spec.type, old.spec.type) or not old.spec.cluster_ip:
        return
    errs.immutable(SPEC.child("clusterIP"), new.spec.cluster_ip, old.spec.cluster_ip)


def validate_endpoints(errs: ErrorList, ep: core_pb2.Endpoints) -> None:
    for i, subset in enumerate(ep.subsets):
        p = Path("subsets").index(i)
        for field_name, json_name in (("addresses", "addresses"), ("not_ready_addresses", "notReadyAddresses")):
            for j, addr in enumerate(getattr(subset, field_name)):
                ap = p.child(json_name).index(j)
                errs.invalid_each(ap.child("ip"), addr.ip, names.is_valid_ip(addr.ip))
                if addr.hostname:
                    errs.invalid_each(ap.child("hostname"), addr.hostname, names.is_dns1123_label(addr.hostname))
                if addr.HasField("node_name") and addr.node_name:
                    errs.invalid_each(ap.child("nodeName"), addr.node_name,
                                      names.is_dns1123_subdomain(addr.node_name))
        require_name = len(subset.ports) > 1
        for j, port in enumerate(subset.ports):
            pp = p.child("ports").index(j)
            if require_name and not port.name:
                errs.required(pp.child("name"))
            elif port.name:
                errs.invalid_each(pp.child("name"), port.name, names.is_dns1123_label(port.name))
            errs.invalid_each(pp.child("port"), port.port, names.is_valid_port_num(port.port))
            _choice(errs, pp.child("protocol"), port.protocol, PROTOCOLS)
