"""The local etcd (tests, `carechain up --with-backends`) is secured like production, and the client uses it.

Playing an attacker or a misconfigured service against the real cluster: plaintext and certificate-less
connections are refused, a wrong password is refused with a clear error, the services' `carechain` user is
confined to CareChain's key prefix and cannot raise its own rights, and tokens etcd stops accepting are
renewed without a write being applied twice.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest

from carechain.audit.server import build
from carechain.audit.v1 import audit_pb2, audit_pb2_grpc
from carechain.common.v1 import common_pb2 as c
from carechain.core.crypto import Ed25519Signer, write_private_file
from carechain.core.errors import FailedPrecondition, Unavailable
from carechain.core.layout import TOKEN_ISSUER_ID, audience, write_public_key
from carechain.core.tokens import ACCESS_TOKEN_TYPE, issue_token
from carechain.dev.backends.etcd import SERVICE_USER, EtcdCluster
from carechain.dev.certificates import LocalCertificateAuthority
from carechain.runtime.auth import Caller, caller_claims
from carechain.runtime.config import AuditSettings
from carechain.runtime.etcd import AccessRefused, Credentials, EtcdClient, prefix_end
from carechain.runtime.server import start_service

pytest_plugins = ["servers_etcd"]

RANGE = "/v3/kv/range"


def raw_post(url: str, body: dict, context: ssl.SSLContext | None = None, token: str | None = None) -> dict:
    """One request to etcd's JSON gateway, without CareChain's client (what an attacker would send)."""
    headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as reply:  # noqa: S310 - local test URL
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


def tls_context(cluster: EtcdCluster, with_client_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    if with_client_cert:
        cert = cluster.client_certificate
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return context


@pytest.fixture()
def root(etcd_cluster) -> Iterator[EtcdClient]:
    client = etcd_cluster.client(user="root")
    yield client
    client.close()


# --- the transport: TLS with client certificates ------------------------------------------------------


def test_a_plaintext_client_is_refused(etcd_cluster, etcd_prefix):
    plaintext_url = etcd_cluster.client_urls[0].replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        raw_post(plaintext_url + RANGE, {"key": b64("/carechain")})
    client = EtcdClient([u.replace("https://", "http://") for u in etcd_cluster.client_urls])
    with pytest.raises(Unavailable, match="plaintext http://: does it require https"):
        client.get(etcd_prefix + "/x")


def test_a_client_without_a_client_certificate_is_refused(etcd_cluster, etcd_prefix):
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        raw_post(etcd_cluster.client_urls[0] + RANGE, {"key": b64("/carechain")},
                 tls_context(etcd_cluster, with_client_cert=False))
    options = {**etcd_cluster.client_options(), "cert_file": None, "key_file": None}
    with pytest.raises(Unavailable, match="client certificate.*CARECHAIN_ETCD_CERT_FILE") as refused:
        EtcdClient(etcd_cluster.client_urls, **options).put(etcd_prefix + "/x", "written without a certificate")
    assert "outcome is unknown" not in str(refused.value)  # the handshake failed: certainly not written
    assert etcd_cluster.client().get(etcd_prefix + "/x") is None


def test_a_client_certificate_of_another_ca_is_refused(etcd_cluster, etcd_prefix, tmp_path):
    impostor = LocalCertificateAuthority(tmp_path / "other-ca").issue("carechain", ["localhost"], common_name="")
    client = etcd_cluster.client(cert_file=impostor.cert_file, key_file=impostor.key_file)
    with pytest.raises(Unavailable, match="CARECHAIN_ETCD_CERT_FILE"):
        client.put(etcd_prefix + "/x", "impostor")
    assert etcd_cluster.client().get(etcd_prefix + "/x") is None


def test_the_peer_port_takes_only_member_certificates(etcd_cluster):
    peer_url = etcd_cluster.members[0].peer_url + "/version"
    for context in (tls_context(etcd_cluster, with_client_cert=False), tls_context(etcd_cluster)):
        request = urllib.request.Request(peer_url)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(request, timeout=5, context=context)  # noqa: S310 - local test URL
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(peer_url.replace("https://", "http://"), timeout=5)  # noqa: S310


def test_a_server_certificate_the_ca_file_does_not_vouch_for_is_refused(etcd_cluster, etcd_prefix, tmp_path):
    other_ca = LocalCertificateAuthority(tmp_path / "other-ca").ca_file
    client = etcd_cluster.client(ca_cert=other_ca)
    with pytest.raises(Unavailable, match="not trusted.*CARECHAIN_ETCD_CA_FILE"):
        client.get(etcd_prefix + "/x")


def test_unreadable_tls_files_stop_the_client_at_start_naming_the_setting(etcd_cluster, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(FailedPrecondition, match="CARECHAIN_ETCD_CA_FILE"):
        etcd_cluster.client(ca_cert=garbage)
    with pytest.raises(FailedPrecondition, match="CARECHAIN_ETCD_CERT_FILE"):
        etcd_cluster.client(cert_file=garbage)
    with pytest.raises(FailedPrecondition, match="CARECHAIN_ETCD_ENDPOINTS.*use https"):
        etcd_cluster.client([u.replace("https://", "http://") for u in etcd_cluster.client_urls])


# --- authentication ----------------------------------------------------------------------------------


def test_a_certificate_alone_grants_nothing(etcd_cluster, etcd_prefix, etcd_client):
    etcd_client.put(etcd_prefix + "/secret", "value")
    answer = raw_post(etcd_cluster.client_urls[0] + RANGE, {"key": b64(etcd_prefix + "/secret")},
                      tls_context(etcd_cluster))
    assert answer.get("message") == "etcdserver: permission denied" and "kvs" not in answer
    with pytest.raises(AccessRefused, match="requires authentication.*CARECHAIN_ETCD_USERNAME"):
        etcd_cluster.client(user=None).get(etcd_prefix + "/secret")


def test_a_wrong_password_is_refused_with_a_clear_error_that_does_not_contain_it(etcd_cluster, etcd_prefix):
    wrong = "wrong-" + uuid.uuid4().hex
    client = etcd_cluster.client(credentials=Credentials(SERVICE_USER, wrong))
    with pytest.raises(AccessRefused) as refused:
        client.put(etcd_prefix + "/x", "with a guessed password")
    message = str(refused.value)
    assert "authentication as etcd user 'carechain' failed" in message
    assert "CARECHAIN_ETCD_PASSWORD" in message and wrong not in message
    assert etcd_cluster.client().get(etcd_prefix + "/x") is None


def test_a_forged_token_is_refused(etcd_cluster, etcd_prefix, etcd_client):
    etcd_client.put(etcd_prefix + "/secret", "value")
    answer = raw_post(etcd_cluster.client_urls[0] + RANGE, {"key": b64(etcd_prefix + "/secret")},
                      tls_context(etcd_cluster), token="forged.1")
    assert answer.get("message") == "etcdserver: invalid auth token" and "kvs" not in answer


def test_the_carechain_user_cannot_read_or_write_outside_its_prefix(etcd_cluster, etcd_client, root):
    other_app = f"/other-app/{uuid.uuid4().hex}"
    root.put(other_app, "another application's data")
    with pytest.raises(AccessRefused, match="permission denied for etcd user 'carechain'"):
        etcd_client.get(other_app)
    with pytest.raises(AccessRefused, match="permission denied"):
        etcd_client.put(other_app, "overwritten by carechain")
    with pytest.raises(AccessRefused, match="permission denied"):
        etcd_client.delete("/", prefix_end("/"))  # every key
    with pytest.raises(AccessRefused, match="permission denied"):
        etcd_client.get_prefix("/")  # a range reaching beyond the prefix
    assert root.get(other_app).value == b"another application's data"


def test_the_carechain_user_cannot_raise_its_own_rights(etcd_cluster, etcd_client):
    for method, body in [
        ("user/grant", {"user": SERVICE_USER, "role": "root"}),
        ("role/grant", {"name": SERVICE_USER, "perm": {"permType": "READWRITE", "key": "AA==", "range_end": "AA=="}}),
        ("user/add", {"name": "intruder", "password": "x"}),
        ("disable", {}),
    ]:
        with pytest.raises(AccessRefused, match="permission denied"):
            etcd_client.auth_request(method, body)
    with pytest.raises(AccessRefused):
        etcd_client.get("/other-app/x")  # still confined


def test_a_token_outdated_by_an_auth_change_is_renewed_and_the_write_applied_once(etcd_cluster, etcd_prefix,
                                                                                  etcd_client, root):
    key = etcd_prefix + "/counter"
    etcd_client.put(key, "1")  # logged in
    user = f"someone-{uuid.uuid4().hex[:8]}"
    root.auth_request("user/add", {"name": user, "password": uuid.uuid4().hex})  # new auth revision
    try:
        etcd_client.put(key, "2")  # the old token is refused before anything is applied; a new one is used
    finally:
        root.auth_request("user/delete", {"name": user})
    assert etcd_client.get(key).version == 2


def test_a_restarted_member_and_a_rotated_password_need_no_new_client(tmp_path, start_etcd_cluster):
    cluster = start_etcd_cluster(tmp_path / "etcd", 1)
    client, root = cluster.client(), cluster.client(user="root")
    try:
        client.put("/carechain/x", "before")
        cluster.stop_member(0)
        cluster.start_member(0)  # simple tokens live in memory: the member forgot ours
        client.put("/carechain/x", "after the restart")
        # Rotation as with a Kubernetes Secret: the password changes in etcd and in the mounted file.
        new_password = uuid.uuid4().hex
        root.auth_request("user/changepw", {"name": SERVICE_USER, "password": new_password})
        write_private_file(cluster.password_file(SERVICE_USER), new_password.encode())
        client.put("/carechain/x", "after the rotation")
        assert client.get("/carechain/x").value == b"after the rotation"
        assert client.get("/carechain/x").version == 3
    finally:
        client.close()
        root.close()
        cluster.stop()


# --- a service over TLS and auth, through its gRPC API ------------------------------------------------

IDENTITY = Ed25519Signer.generate(TOKEN_ISSUER_ID)


def audit_settings(tmp_path, etcd_cluster, etcd_prefix, **overrides) -> AuditSettings:
    trust_dir = tmp_path / "trust"
    write_public_key(trust_dir / f"{TOKEN_ISSUER_ID}.pub", IDENTITY.public_key_bytes())
    fields = {**etcd_cluster.client_settings(), **overrides}
    return AuditSettings(
        listen_address="127.0.0.1:0", data_dir=tmp_path / "audit", trust_dir=trust_dir, chain_id="audit-chain",
        audit_store="etcd", etcd_prefix=etcd_prefix, shutdown_grace_seconds=0, **fields,
    )


def record_event(settings: AuditSettings) -> audit_pb2.RecordEventResponse:
    caller = Caller("svc-records", c.PRINCIPAL_KIND_SERVICE)
    token, _ = issue_token(IDENTITY, ACCESS_TOKEN_TYPE, caller_claims(caller, audience("audit")), 60)
    event = audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()), time_ms=int(time.time() * 1000), service="records", actor_id="prac-1",
        patient_id="pat-1", action=audit_pb2.AUDIT_ACTION_READ, outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
    )
    register, closers = build(settings)
    running = start_service("audit", settings, register, closers)
    try:
        with grpc.insecure_channel(running.address) as channel:
            return audit_pb2_grpc.AuditServiceStub(channel).RecordEvent(
                audit_pb2.RecordEventRequest(event=event), metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
    finally:
        running.stop()


def test_a_service_with_the_wrong_etcd_password_answers_unavailable_naming_the_setting(
    tmp_path, etcd_cluster, etcd_prefix, caplog
):
    wrong = "wrong-" + uuid.uuid4().hex
    password_file = tmp_path / "etcd-password"
    write_private_file(password_file, wrong.encode())
    settings = audit_settings(tmp_path, etcd_cluster, etcd_prefix, etcd_password_file=password_file)
    with pytest.raises(grpc.RpcError) as failed:
        record_event(settings)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CARECHAIN_ETCD_PASSWORD" in failed.value.details() and wrong not in failed.value.details()
    assert wrong not in caplog.text
    assert etcd_cluster.client().get_prefix(etcd_prefix).kvs == []


def test_a_service_records_through_tls_and_auth(tmp_path, etcd_cluster, etcd_prefix, etcd_client):
    receipt = record_event(audit_settings(tmp_path, etcd_cluster, etcd_prefix))
    assert receipt.sequence == 1
    assert etcd_client.get(f"{etcd_prefix}/audit-chain/audit/events/{1:020d}") is not None


def test_a_cluster_left_by_an_older_plaintext_carechain_is_not_started_half_secured(tmp_path):
    (tmp_path / "etcd" / "m0" / "member").mkdir(parents=True)  # data of a cluster made without TLS
    with pytest.raises(RuntimeError, match="without TLS and authentication.*remove that directory"):
        EtcdCluster(tmp_path / "etcd", members=1).start()
