"""TLS on the terminal port: ``tls_cert_file`` and ``tls_key_file`` set, a real
TLS client signs on; a plaintext client, an untrusting client and a silent one
get nothing and are closed."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.settings import Settings
from tests.conftest import make_settings, running_gateway
from tests.e2e.helpers import echo_request, framed, terminal_for
from tests.e2e.test_hostile import assert_no_loop_errors, loop_errors  # noqa: F401 (a fixture)

READ_TIMEOUT_S = 1.0
TLS_ALERT = 21  # TLS record content type: what a TLS server may send a client it refuses


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posgw test gateway")])
    now = datetime.now(UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "gateway.crt", directory / "gateway.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


@pytest.fixture
async def tls_gateway(db_url, tmp_path, certificate, loop_errors):  # noqa: F811 (the fixture imported above)
    cert_file, key_file = certificate
    settings = make_settings(db_url, tmp_path, tls_cert_file=cert_file, tls_key_file=key_file,
                             read_timeout_s=READ_TIMEOUT_S)
    async with running_gateway(settings) as gateway:
        yield gateway
    await assert_no_loop_errors(loop_errors)  # a refused handshake is no error of the gateway's


async def all_places_given_back(gateway) -> None:
    """Every connection refused or closed has given back its place under connections_max."""
    async with asyncio.timeout(1):
        while gateway.server.admitted:
            await asyncio.sleep(0.01)


def trusting(cert_file: Path) -> ssl.SSLContext:
    """A client context that trusts the gateway's certificate, and nothing else."""
    return ssl.create_default_context(cafile=str(cert_file))


async def test_a_tls_terminal_signs_on_and_echoes(tls_gateway, world, certificate):
    terminal = terminal_for(tls_gateway, world, ssl_context=trusting(certificate[0]))
    response = await terminal.sign_on()
    assert response.response_code == "00"
    assert len(response.message.key_data) == 40  # the keys checked out under the TMK
    assert (await terminal.echo()).response_code == "00"
    tls = terminal._writer.get_extra_info("ssl_object")
    assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
    assert tls.getpeercert()["subject"] == ((("commonName", "posgw test gateway"),),)
    await terminal.close()


async def test_a_plaintext_client_gets_no_answer_and_is_closed(tls_gateway, world, certificate):
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_gateway.server.port)
    writer.write(framed(echo_request(world)))
    received = b""
    async with asyncio.timeout(5):
        try:
            while chunk := await reader.read(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert received == b"" or received[0] == TLS_ALERT, f"answered in plaintext: {received!r}"
    writer.close()
    await all_places_given_back(tls_gateway)
    terminal = terminal_for(tls_gateway, world, ssl_context=trusting(certificate[0]))
    assert (await terminal.sign_on()).response_code == "00"  # TLS terminals are served as before
    await terminal.close()


async def test_a_client_that_does_not_trust_the_certificate_refuses_it(tls_gateway, world):
    terminal = terminal_for(tls_gateway, world, ssl_context=ssl.create_default_context())  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        await terminal.sign_on()


async def test_a_connection_that_never_starts_the_handshake_is_closed_after_read_timeout(tls_gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_gateway.server.port)
    started = time.monotonic()
    async with asyncio.timeout(5):
        try:
            assert await reader.read(1) == b""
        except ConnectionResetError:
            pass
    waited = time.monotonic() - started
    assert READ_TIMEOUT_S - 0.05 <= waited <= READ_TIMEOUT_S + 0.5
    writer.close()
    await all_places_given_back(tls_gateway)


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_a_tls_cert_without_its_key_or_a_key_without_its_cert_is_a_settings_error(tmp_path, given):
    with pytest.raises(pydantic.ValidationError, match="tls_cert_file and tls_key_file go together"):
        Settings(database_url="postgresql://unused", **{given: tmp_path / "file.pem"})


def test_without_tls_settings_the_port_is_plain_tcp(tmp_path):
    settings = Settings(database_url="postgresql://unused")
    assert settings.tls_cert_file is None and settings.tls_key_file is None
