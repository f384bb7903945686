"""Credentials of a demo federation: a CA, the SuperLink's TLS certificate, SuperNode key pairs.

* TLS: a self-signed certificate authority (``ca.crt``) signs the SuperLink's certificate
  (``server.pem``/``server.key``) for the names it is reached by (``127.0.0.1``,
  ``localhost`` by default). SuperNodes and the ``flwr`` CLI trust ``ca.crt``
  (``--root-certificates``, ``root-certificates`` of a SuperLink connection).
* Node authentication: each SuperNode has an ECDSA key pair (NIST P-384) in OpenSSH format,
  the format ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read. The SuperLink (``--enable-supernode-auth``) accepts a
  node only when its public key was registered and it signs its requests with the private
  key; an unknown or unauthenticated SuperNode is refused.

Made with the ``cryptography`` package Flower itself depends on. These files are for demos
and tests on one machine: a production CA keeps its key offline and issues certificates with
the site's real host names.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 365
NODE_KEY_CURVE = ec.SECP384R1


@dataclass(frozen=True)
class Credentials:
    """Paths of the files :func:`make_credentials` wrote."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[tuple[Path, Path], ...]
    """``(private key, public key)`` per SuperNode."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(
    directory: Path, name: str = "fedflower demo CA"
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Write ``ca.crt`` and ``ca.key``: a self-signed certificate authority."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _pem_key(key), private=True)
    return cert, key


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> tuple[Path, Path]:
    """Write ``server.pem``/``server.key``: the SuperLink's certificate for ``hosts``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_subject_alt_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = _write(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(directory / "server.key", _pem_key(key), private=True)
    return cert_path, key_path


def make_node_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>`` (private) and ``<name>.pub``: a SuperNode's OpenSSH ECDSA key pair."""
    key = ec.generate_private_key(NODE_KEY_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private_path = _write(directory / name, private, private=True)
    public_path = _write(directory / f"{name}.pub", public + f" {name}\n".encode())
    return private_path, public_path


def make_credentials(
    directory: str | Path, num_nodes: int, hosts: Sequence[str] = DEFAULT_HOSTS
) -> Credentials:
    """Write a CA, the SuperLink certificate and ``num_nodes`` SuperNode key pairs.

    Parameters
    ----------
    directory : path
        Output directory (created).
    num_nodes : int
        Number of SuperNode key pairs (``supernode-1`` ... ``supernode-N``).
    hosts : sequence of str
        IP addresses and DNS names the SuperLink certificate is valid for.
    """
    from fedflower.errors import ConfigError

    if num_nodes < 0:
        raise ConfigError(f"the number of SuperNode key pairs must be >= 0, got {num_nodes}")
    if not hosts:
        raise ConfigError("the SuperLink certificate needs at least one host name or IP")
    out = Path(directory)
    ca_cert, ca_key = make_ca(out)
    server_cert, server_key = make_server_cert(out, ca_cert, ca_key, hosts)
    nodes = tuple(make_node_keys(out / "keys", f"supernode-{i}") for i in range(1, num_nodes + 1))
    log.info("wrote a CA, a SuperLink certificate and %d SuperNode key pairs to %s", num_nodes, out)
    return Credentials(out, out / "ca.crt", server_cert, server_key, nodes)
