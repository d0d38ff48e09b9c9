"""The cluster's certificates and keys, made with Debian's `openssl` (no Python crypto dependency).

One CA signs: the apiserver's serving certificate (valid for 127.0.0.1, localhost and the in-cluster
names of the `kubernetes` Service), and one client certificate per identity that talks to the
apiserver: the admin (`system:masters`), the controller-manager and the scheduler (their own
bootstrap RBAC users, as kubeadm sets them up). A separate RSA key pair signs and verifies
service-account tokens, so TokenRequest works. A second CA, as in kubeadm, signs only the
apiserver's front-proxy client (the request-header authentication the controller-manager and
scheduler expect to find configured).

Guarantee: `ensure_pki` is idempotent; it regenerates everything only if a file is missing.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localcluster import names

DAYS = "3650"
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate: file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER)


@dataclass(frozen=True)
class Pki:
    """Paths of the files in a PKI directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.directory / "front-proxy-ca.crt"

    @property
    def front_proxy_ca_key(self) -> Path:
        return self.directory / "front-proxy-ca.key"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.directory / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.directory / "front-proxy-client.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, who: ClientIdentity) -> Path:
        return self.directory / f"{who.stem}.crt"

    def client_key(self, who: ClientIdentity) -> Path:
        return self.directory / f"{who.stem}.key"

    def all_files(self) -> list[Path]:
        files = [self.ca_cert, self.ca_key, self.serving_cert, self.serving_key]
        files += [self.sa_key, self.sa_pub, self.front_proxy_ca_cert, self.front_proxy_ca_key]
        files += [self.front_proxy_client_cert, self.front_proxy_client_key]
        for who in CLIENTS:
            files += [self.client_cert(who), self.client_key(who)]
        return files


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ec_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)


def _sign(ca: tuple[Path, Path], key: Path, cert: Path, subject: str, extensions: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(extensions)
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-set_serial", f"0x{secrets.token_hex(8)}", "-days", DAYS,
            "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip


def _ca(cert: Path, key: Path, name: str) -> None:
    _ec_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}",
        "-days", DAYS, "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip


def ensure_pki(directory: Path) -> Pki:
    """Create the PKI under `directory` unless it is already complete."""
    pki = Pki(directory)
    if all(path.exists() for path in pki.all_files()):
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    _ca(pki.ca_cert, pki.ca_key, "localcluster-ca")
    _ca(pki.front_proxy_ca_cert, pki.front_proxy_ca_key, "localcluster-front-proxy-ca")
    _ec_key(pki.front_proxy_client_key)
    _sign(
        (pki.front_proxy_ca_cert, pki.front_proxy_ca_key),
        pki.front_proxy_client_key,
        pki.front_proxy_client_cert,
        f"/CN={FRONT_PROXY_CLIENT}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n",
    )

    sans = [
        f"IP:{names.HOST}",
        f"IP:{names.KUBERNETES_SERVICE_IP}",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    _ec_key(pki.serving_key)
    _sign(
        (pki.ca_cert, pki.ca_key),
        pki.serving_key,
        pki.serving_cert,
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(sans)}\n",
    )

    for who in CLIENTS:
        subject = "".join(f"/O={group}" for group in who.groups) + f"/CN={who.user}"
        _ec_key(pki.client_key(who))
        _sign(
            (pki.ca_cert, pki.ca_key),
            pki.client_key(who),
            pki.client_cert(who),
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n",
        )

    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pki.sa_key)
    )
    pki.sa_key.chmod(0o600)
    _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki
