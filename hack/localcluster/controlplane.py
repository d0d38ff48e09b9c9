"""The command lines of the cluster's components and how to tell that each one is healthy.

Order and why: etcd (storage) → kube-apiserver (RBAC + Node authorization, default admission
plugins incl. ServiceAccount, service-account signing keys so TokenRequest works) →
kube-controller-manager (all default controllers, one service account per controller like kubeadm,
the SA key and root CA so the `default` ServiceAccount and `kube-root-ca.crt` appear) →
kube-scheduler → KWOK (fake nodes and the pods on them, driven by our `stages.yaml`) → the job-pod
executor (a kubelet stand-in for executor-labelled pods).

Every component listens on 127.0.0.1 only, on ports picked at random when the cluster starts, so
parallel clusters (CI jobs, a test's second cluster) never collide.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from localcluster import names, paths
from localcluster.pki import FRONT_PROXY_CLIENT, Pki
from localcluster.processes import free_port


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def allocate(cls) -> Ports:
        """Distinct free ports on 127.0.0.1, below the ephemeral range (`processes.free_port`)."""
        return cls(*(free_port() for _ in range(6)))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def apiserver_url(ports: Ports) -> str:
    return f"https://{names.HOST}:{ports.apiserver}"


@dataclass(frozen=True)
class Layout:
    """What the command lines refer to: binaries, state, PKI, kubeconfigs and ports."""

    bin_dir: Path
    state: paths.StatePaths
    pki: Pki
    ports: Ports

    def kubeconfig_of(self, component: str) -> Path:
        return self.state.kubeconfigs / f"{component}.kubeconfig"


def etcd_argv(lay: Layout) -> list[str]:
    client = f"http://{names.HOST}:{lay.ports.etcd_client}"
    peer = f"http://{names.HOST}:{lay.ports.etcd_peer}"
    return [
        str(lay.bin_dir / "etcd"),
        "--name=localcluster",
        f"--data-dir={lay.state.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=localcluster={peer}",
        "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing, fsync costs seconds
        "--log-level=warn",
    ]


def apiserver_argv(lay: Layout) -> list[str]:
    pki = lay.pki
    return [
        str(lay.bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://{names.HOST}:{lay.ports.etcd_client}",
        f"--bind-address={names.HOST}",
        # Without a default route the apiserver cannot pick an address by itself.
        f"--advertise-address={names.HOST}",
        f"--secure-port={lay.ports.apiserver}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=Node,RBAC",
        # Request-header (front-proxy) authentication, as kubeadm configures it.
        f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        # The defaults (ServiceAccount, NamespaceLifecycle, PodSecurity, ...) plus kubeadm's extra.
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={names.SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={names.SERVICE_CIDR}",
        # A loopback address is not a valid Endpoints address; the `kubernetes` Service keeps
        # its ClusterIP but gets no endpoints (clients here use the kubeconfig's address).
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def _component_common(lay: Layout, component: str, port: int) -> list[str]:
    kubeconfig = lay.kubeconfig_of(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={names.HOST}",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_argv(lay: Layout) -> list[str]:
    pki = lay.pki
    return [
        str(lay.bin_dir / "kube-controller-manager"),
        *_component_common(lay, "controller-manager", lay.ports.controller_manager),
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        "--cluster-name=localcluster",
    ]


def scheduler_argv(lay: Layout) -> list[str]:
    return [
        str(lay.bin_dir / "kube-scheduler"),
        *_component_common(lay, "scheduler", lay.ports.scheduler),
    ]


def kwok_argv(lay: Layout) -> list[str]:
    return [
        str(lay.bin_dir / "kwok"),
        f"--kubeconfig={lay.state.kubeconfig}",
        f"--config={paths.STAGES_FILE}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={names.KWOK_NODE_ANNOTATION}={names.KWOK_NODE_VALUE}",
        "--node-lease-duration-seconds=40",
        f"--cidr={names.POD_CIDR}",
        f"--server-address={names.HOST}:{lay.ports.kwok}",
    ]


def executor_argv(lay: Layout) -> list[str]:
    return [
        sys.executable,
        "-u",
        "-m",
        "localcluster.executor",
        f"--state-dir={lay.state.root}",
        f"--kubeconfig={lay.state.kubeconfig}",
    ]


# Health checks: each returns True when the component serves, raises or returns False otherwise.


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
        return int(response.status), bytes(response.read())


def etcd_healthy(lay: Layout) -> bool:
    status, body = _get(f"http://{names.HOST}:{lay.ports.etcd_client}/health")
    return status == 200 and json.loads(body).get("health") == "true"


def admin_tls(pki: Pki) -> ssl.SSLContext:
    from localcluster.pki import ADMIN

    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert(ADMIN)), str(pki.client_key(ADMIN)))
    return context


def apiserver_ready(lay: Layout) -> bool:
    status, _ = _get(f"{apiserver_url(lay.ports)}/readyz", admin_tls(lay.pki))
    return status == 200


def _self_signed_healthz(port: int) -> bool:
    # These serve a self-signed certificate of their own; /healthz is open to anonymous users.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    status, _ = _get(f"https://{names.HOST}:{port}/healthz", context)
    return status == 200


def controller_manager_healthy(lay: Layout) -> bool:
    return _self_signed_healthz(lay.ports.controller_manager)


def scheduler_healthy(lay: Layout) -> bool:
    return _self_signed_healthz(lay.ports.scheduler)


def kwok_healthy(lay: Layout) -> bool:
    status, _ = _get(f"http://{names.HOST}:{lay.ports.kwok}/healthz")
    return status == 200
