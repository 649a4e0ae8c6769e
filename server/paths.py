"""Where the server keeps its state: the database, the model store and the TLS files. `models` is
[models] dir when set (a folder every replica shares)."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from facefleet.core.config import check_private
from facefleet.core.files import read_small
from facefleet.core.paths import model_store_dir
from facefleet.server.config import ServerConfig
from facefleet.server.errors import ServerConfigError


@dataclass(frozen=True)
class ServerPaths:
    """The files under one state directory (TLS paths may be overridden by the config)."""

    state_dir: Path
    models: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def from_config(cls, state_dir: Path, config: ServerConfig) -> ServerPaths:
        tls = state_dir / "tls"
        return cls(
            state_dir=state_dir,
            models=config.models.dir or model_store_dir(state_dir),
            ca_cert=config.tls.ca_cert or tls / "ca.pem",
            server_cert=config.tls.server_cert or tls / "server.pem",
            server_key=config.tls.server_key or tls / "server.key",
        )

    @property
    def database(self) -> Path:
        return self.state_dir / "server.db"

    @property
    def uploads(self) -> Path:
        """Model uploads in progress (PublishModel), one temporary directory each."""
        return self.state_dir / "uploads"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def devices_dir(self) -> Path:
        return self.tls_dir / "devices"


TLS_FILES = {"ca_cert": "CA certificate", "server_cert": "server certificate", "server_key": "server key"}
"""The server's TLS files: the ServerPaths attribute and [tls] key → what it is."""


MAX_PEM_BYTES = 1 << 20
"""Largest PEM file (the CA, the server's chain, its key) read."""


def read_pem(path: Path, key: str) -> bytes:
    """The PEM file of one of TLS_FILES (by key); ServerConfigError says what is wrong and the fix."""
    what = f"{TLS_FILES[key]} (tls.{key})"
    try:
        data = read_small(path, MAX_PEM_BYTES)
    except FileNotFoundError:
        raise ServerConfigError(
            f"{what} {path} does not exist; create the site CA and server certificate with "
            "`facefleet-server certs init`, or set the path in [tls]"
        ) from None
    except OSError as exc:
        raise ServerConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if b"-----BEGIN" not in data:
        raise ServerConfigError(f"{what} {path} is not a PEM file")
    if key == "server_key":
        check_private(f"tls.{key}", path, ServerConfigError)
    return data


@dataclass(frozen=True)
class ServerTls:
    """The server's TLS files read once and checked together (check_tls): the PEM bytes every listener takes,
    so that they all serve the pair that was checked, whatever happens to the files afterwards."""

    ca: bytes
    chain: bytes
    key: bytes


def check_tls(paths: ServerPaths) -> ServerTls:
    """Read the CA, the server's chain and its key once, and check those bytes work together as OpenSSL loads
    them: the key unencrypted and belonging to the first certificate of the chain, the CA loadable.
    ServerConfigError names the file, the fault and the fix."""
    ca, chain, key = (read_pem(getattr(paths, name), name) for name in TLS_FILES)
    cert_path, key_path, ca_path = paths.server_cert, paths.server_key, paths.ca_cert
    if b"ENCRYPTED" in key:  # "BEGIN ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED"
        raise ServerConfigError(
            f"server key (tls.server_key) {key_path} is encrypted, and the server cannot ask for its "
            f"passphrase; store it unencrypted with mode 0600 (`openssl pkey -in {key_path} -out NEW.key`), "
            "or hand it over with LoadCredential="
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with private_copies(chain, key, ca) as (chain_copy, key_copy, ca_copy):
        try:
            context.load_cert_chain(chain_copy, key_copy, password=b"")
        except (ssl.SSLError, OSError) as exc:
            raise ServerConfigError(_pair_fault(chain, key, cert_path, key_path, exc)) from None
        try:
            context.load_verify_locations(cafile=ca_copy)
        except (ssl.SSLError, OSError) as exc:
            raise ServerConfigError(
                f"CA certificate (tls.ca_cert) {ca_path}: OpenSSL cannot load it ({_reason(exc)}); it must "
                "hold the site CA's certificate(s) in PEM (<state_dir>/tls/ca.pem from `facefleet-server "
                "certs init`)"
            ) from None
    return ServerTls(ca, chain, key)


def load_pair(context: ssl.SSLContext, tls: ServerTls) -> None:
    """Load the server's chain and key of `tls` (the bytes check_tls checked) into context; ssl.SSLError or
    OSError when OpenSSL refuses them, ServerConfigError when they cannot be handed to it."""
    with private_copies(tls.chain, tls.key) as (chain_copy, key_copy):
        context.load_cert_chain(chain_copy, key_copy, password=b"")


@contextlib.contextmanager
def private_copies(*contents: bytes) -> Iterator[list[Path]]:
    """Files holding these bytes, for OpenSSL, which loads a certificate chain and key from files alone:
    mode 0600 in a temporary directory of mode 0700 (systemd's PrivateTmp=), removed on leaving. OpenSSL
    then loads exactly the bytes read and checked, not whatever the configured files hold by then.
    ServerConfigError when they cannot be written."""
    try:
        directory = tempfile.TemporaryDirectory(prefix="facefleet-tls-")  # mkdtemp: mode 0700
    except OSError as exc:
        raise _unwritable(exc) from None
    with directory:
        copies = [Path(directory.name, f"{index}.pem") for index in range(len(contents))]
        try:
            for copy, data in zip(copies, contents, strict=True):
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with open(fd, "wb") as file:
                    file.write(data)
        except OSError as exc:
            raise _unwritable(exc) from None
        yield copies


def _unwritable(exc: OSError) -> ServerConfigError:
    return ServerConfigError(
        f"cannot hand the TLS files to OpenSSL through a private temporary directory "
        f"({exc.strerror or exc}); the temporary directory (TMPDIR, else /tmp) must be writable"
    )


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _pair_fault(chain: bytes, key: bytes, cert_path: Path, key_path: Path, exc: BaseException) -> str:
    """What is wrong with a certificate chain and key that OpenSSL refused to load together."""
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        return (
            f"server certificate (tls.server_cert) {cert_path}: OpenSSL cannot load it ({_reason(exc)}); it "
            "must hold the server's certificate in PEM, then the certificates of the CAs that signed it"
        )
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return (
            f"server key (tls.server_key) {key_path} holds no private key OpenSSL can read ({_reason(exc)}); "
            f"it must be the key made with {cert_path} (unencrypted PEM)"
        )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    owners = [
        index
        for index, cert in enumerate(certificates)
        if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public
    ]
    first = certificates[0].subject.rfc4514_string()
    if owners:
        return (
            f"server certificate (tls.server_cert) {cert_path}: its certificates are in the wrong order (the "
            f"key {key_path} belongs to certificate {owners[0] + 1}, but the first is {first!r}); put the "
            "server's own certificate first, then the CAs that signed it"
        )
    return (
        f"server key (tls.server_key) {key_path} does not belong to the server certificate {cert_path} "
        f"({first!r}); use the key made with that certificate, or re-issue both with "
        "`facefleet-server certs server`"
    )
