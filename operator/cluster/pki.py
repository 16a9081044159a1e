"""Certificates for the local cluster, made with the openssl command line.

- the service-account signing key pair;
- the front-proxy CA and its client certificate: kube-apiserver presents it when it proxies a request to an
  aggregated API (KEDA's metrics server), which trusts the CA through the ``extension-apiserver-authentication``
  ConfigMap (the API aggregation layer);
- a CA and one serving-and-client certificate for KEDA (the operator's gRPC metrics service and the metrics
  API server share it, as KEDA's own certificate rotation makes them share one).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from burstpilot.operator.cluster.procs import ClusterError

DAYS = 3650


def _openssl(*args: str) -> None:
    try:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterError(
            "openssl is not on PATH (the local cluster makes its certificates with it)"
        ) from None
    if res.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and its public half: ``name.key``, ``name.pub``."""
    key, pub = directory / f"{name}.key", directory / f"{name}.pub"
    _openssl("genrsa", "-out", str(key), "2048")
    _openssl("rsa", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub


def ca(directory: Path, name: str, common_name: str) -> tuple[Path, Path]:
    """A self-signed CA: ``name.crt``, ``name.key``."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(DAYS),
        "-keyout", str(key), "-out", str(crt), "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    return crt, key


def certificate(
    directory: Path,
    name: str,
    authority: tuple[Path, Path],
    common_name: str,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = True,
    client: bool = False,
) -> tuple[Path, Path]:
    """A certificate signed by ``authority`` (crt, key): ``name.crt``, ``name.key``."""
    crt, key, csr = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    usages = ",".join(u for u, on in (("serverAuth", server), ("clientAuth", client)) if on)
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    lines.append(f"extendedKeyUsage={usages}")
    sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext = directory / f"{name}.ext"
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={common_name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(authority[0]), "-CAkey", str(authority[1]),
        "-CAcreateserial", "-days", str(DAYS), "-out", str(crt), "-extfile", str(ext),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return crt, key
