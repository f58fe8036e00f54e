"""The etcd TLS and authentication settings: read from CARECHAIN_ETCD_*, checked at start-up, secrets kept out."""

from __future__ import annotations

import pytest

from carechain.core.errors import FailedPrecondition
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.runtime.config import LedgerSettings
from carechain.runtime.etcd import AccessRefused, Credentials, EtcdClient


@pytest.fixture()
def pki(tmp_path):
    ca = LocalCertificateAuthority(tmp_path / "ca")
    return ca.ca_file, ca.issue("client", ["localhost"], common_name="")


def test_settings_come_from_the_environment_and_the_password_stays_secret(monkeypatch, tmp_path, pki):
    ca_file, cert = pki
    monkeypatch.setenv("CARECHAIN_ETCD_ENDPOINTS", "https://127.0.0.1:2379")
    monkeypatch.setenv("CARECHAIN_ETCD_CA_FILE", str(ca_file))
    monkeypatch.setenv("CARECHAIN_ETCD_CERT_FILE", str(cert.cert_file))
    monkeypatch.setenv("CARECHAIN_ETCD_KEY_FILE", str(cert.key_file))
    monkeypatch.setenv("CARECHAIN_ETCD_USERNAME", "carechain")
    monkeypatch.setenv("CARECHAIN_ETCD_PASSWORD", "s3cret-value")
    settings = LedgerSettings()
    assert settings.etcd_ca_file == ca_file and settings.etcd_username == "carechain"
    assert "s3cret-value" not in repr(settings)
    client = EtcdClient.from_settings(settings)
    assert "s3cret-value" not in repr(client._credentials)
    client.close()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"etcd_username": "carechain"}, "CARECHAIN_ETCD_USERNAME needs CARECHAIN_ETCD_PASSWORD"),
        ({"etcd_password": "x"}, "CARECHAIN_ETCD_USERNAME is empty"),
        ({"etcd_username": "u", "etcd_password": "x", "etcd_password_file": "/p"}, "not both"),
        ({"etcd_endpoints": "http://127.0.0.1:2379", "etcd_ca_file": "CA"}, "CARECHAIN_ETCD_ENDPOINTS.*use https"),
        ({"etcd_cert_file": "CERT"}, "CARECHAIN_ETCD_CERT_FILE and CARECHAIN_ETCD_KEY_FILE go together"),
        ({"etcd_ca_file": "/nonexistent/ca.pem"}, "CARECHAIN_ETCD_CA_FILE /nonexistent/ca.pem: not a readable"),
        ({"etcd_cert_file": "CERT", "etcd_key_file": "/nonexistent/key.pem"}, "CARECHAIN_ETCD_CERT_FILE"),
    ],
)
def test_inconsistent_settings_stop_the_service_naming_the_setting(pki, fields, named):
    ca_file, cert = pki
    values = {"etcd_endpoints": "https://127.0.0.1:2379", **fields}
    values = {k: {"CA": str(ca_file), "CERT": str(cert.cert_file)}.get(v, v) for k, v in values.items()}
    with pytest.raises(FailedPrecondition, match=named):
        EtcdClient.from_settings(LedgerSettings(**values))


def test_a_password_file_is_read_at_each_login_without_its_newline(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("first\n")
    credentials = Credentials("carechain", password_file=password_file)
    assert credentials.read_password() == "first"
    password_file.write_text("rotated\n")
    assert credentials.read_password() == "rotated"


def test_a_missing_password_file_is_an_access_problem_naming_the_setting(tmp_path):
    with pytest.raises(AccessRefused, match="cannot read CARECHAIN_ETCD_PASSWORD_FILE"):
        Credentials("carechain", password_file=tmp_path / "missing").read_password()
