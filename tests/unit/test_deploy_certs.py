"""Demo credentials: a CA that signs the SuperLink certificate, Flower-readable node keys."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

from fedflower.deploy.certs import make_credentials
from fedflower.errors import ConfigError


def test_server_certificate_is_signed_by_the_ca_for_the_hosts(tmp_path: Path) -> None:
    made = make_credentials(tmp_path, 2, hosts=("127.0.0.1", "localhost", "link.example"))
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    assert server.issuer == ca.subject
    ca.public_key().verify(  # raises InvalidSignature if the CA did not sign it
        server.signature,
        server.tbs_certificate_bytes,
        padding.PKCS1v15(),
        server.signature_hash_algorithm,
    )
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "link.example"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct(made.server_key.stat().st_mode & 0o777) == "0o600"


def test_node_keys_are_the_openssh_ec_keys_flower_reads(tmp_path: Path) -> None:
    made = make_credentials(tmp_path, 3)
    assert len(made.node_keys) == 3
    publics = set()
    for private_path, public_path in made.node_keys:
        private = load_ssh_private_key(private_path.read_bytes(), password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert uses_nist_ec_curve(private.public_key())
        # the exact loader `flwr supernode register` uses
        publics.add(try_load_public_key(public_path))
    assert len(publics) == 3


def test_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=">= 0"):
        make_credentials(tmp_path, -1)
    with pytest.raises(ConfigError, match="at least one host"):
        make_credentials(tmp_path, 1, hosts=())
