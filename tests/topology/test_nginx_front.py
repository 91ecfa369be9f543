"""nginx in front of gunicorn, as docs/scaling.md step 2 describes (issue 17, item 4).

With ``CITIZEN_LOOKUP_TRUSTED_PROXIES=1`` the app takes the client's address from the one proxy
it trusts: a connection's CIDR list is checked on the address nginx saw, not on nginx's own,
and not on an ``X-Forwarded-For`` the client wrote itself. Signatures are checked against the
public URL (nginx's), which is what providers sign.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from cluster_topology import Cluster
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from citizen_lookup.providers.generic import sign
from tests.conftest import REDIS_TEST_URL, service_unavailable
from tests.helpers import OWNER_ID
from tests.topology.conftest import require_parts

pytestmark = [pytest.mark.e2e, pytest.mark.topology, pytest.mark.services]

SECRET = "nginx-front-secret-0123456789"
TWILIO_SID, TWILIO_TOKEN = "AC" + "1" * 32, "nginx-front-twilio-token"
ALLOWED = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback: a second client address


@pytest.fixture(scope="module")
def behind_nginx(pg_url: str) -> Iterator[Cluster]:
    """One gunicorn node behind nginx, on the test PostgreSQL and Redis (shared by the module)."""
    require_parts("nginx")
    from redis import Redis

    try:
        Redis.from_url(REDIS_TEST_URL).ping()
    except Exception as exc:
        service_unavailable("Redis", exc)
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    cluster = Cluster.create(web_nodes=1)
    cluster.extra_env = {
        "CITIZEN_LOOKUP_DATABASE_URL": pg_url,
        "CITIZEN_LOOKUP_READ_DATABASE_URL": "",
        "CITIZEN_LOOKUP_DB_POOLER": "",
        "CITIZEN_LOOKUP_REDIS_URL": REDIS_TEST_URL,
    }
    focal = [
        "--focal-name", "Dau Moi", "--focal-title", "Truong phong",
        "--focal-phone", "+842439999999", "--focal-email", "daumoi@example.vn",
        "--assessment", "ATTT-NGINX", "--outbound-url", "https://gateway.example/mt",
    ]  # fmt: skip
    try:
        (cluster.path / "metrics").mkdir()
        cluster.cli("db", "upgrade")
        cluster.cli(
            "connections", "add", "gw", "--kind", "generic", *focal, "--allow", f"{ALLOWED}/32",
            "--credential", "secret=-", input=SECRET + "\n",
        )  # fmt: skip
        cluster.cli(
            "connections", "add", "tw", "--kind", "twilio", *focal,
            "--credential", f"account_sid={TWILIO_SID}", "--credential", "from_number=+15005550006",
            "--credential", "auth_token=-", input=TWILIO_TOKEN + "\n",
        )  # fmt: skip
        cluster.start_web(0)
        cluster.start_nginx()
        yield cluster
    finally:
        cluster.down()


def post(port: int, path: str, body: bytes, headers: dict[str, str], source: str = "127.0.0.1"):
    """POST from a chosen loopback source address (as a client elsewhere would connect)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def signed_sms(message_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"id": message_id, "from": "+84912345678", "to": "8077", "text": f"DC {OWNER_ID}"}
    ).encode()
    return body, {"Content-Type": "application/json", "X-Signature": sign(SECRET, body)}


def test_the_cidr_list_is_checked_on_the_client_address_nginx_saw(behind_nginx: Cluster) -> None:
    port = behind_nginx.ports["nginx"]
    body, headers = signed_sms("from-allowed")
    assert post(port, "/webhooks/gw/sms", body, headers, source=ALLOWED)[0] == 200

    # From another address: refused, even when the client claims the allowed one itself.
    body, headers = signed_sms("from-elsewhere")
    assert post(port, "/webhooks/gw/sms", body, headers)[0] == 403
    spoofed = {**headers, "X-Forwarded-For": ALLOWED}
    assert post(port, "/webhooks/gw/sms", body, spoofed)[0] == 403
    log = (behind_nginx.path / "nginx" / "access.log").read_text()
    assert f"{ALLOWED} [" in log and '"POST /webhooks/gw/sms" 200' in log


def test_signatures_are_checked_against_the_public_url(behind_nginx: Cluster) -> None:
    fields = {
        "MessageSid": "SM" + "2" * 32,
        "AccountSid": TWILIO_SID,
        "From": "+84912345678",
        "To": "+15005550006",
        "Body": f"DC {OWNER_ID}",
    }
    body = urlencode(fields).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    validator = RequestValidator(TWILIO_TOKEN)
    public = f"{behind_nginx.public_url}/webhooks/tw/sms"
    node = f"http://127.0.0.1:{behind_nginx.ports['web_0']}/webhooks/tw/sms"
    port = behind_nginx.ports["nginx"]

    as_twilio_signs = {**form, "X-Twilio-Signature": validator.compute_signature(public, fields)}
    status, answer = post(port, "/webhooks/tw/sms", body, as_twilio_signs)
    assert status == 200 and "<Response" in answer, (status, answer)
    internal = {**form, "X-Twilio-Signature": validator.compute_signature(node, fields)}
    assert post(port, "/webhooks/tw/sms", body, internal)[0] == 403


def test_a_ussd_step_goes_through_its_own_location(behind_nginx: Cluster) -> None:
    """USSD routes have a location of their own (a step is never passed on once sent)."""
    body = json.dumps(
        {"session_id": "nginx-1", "from": "+84912345678", "service_code": "*8077#", "text": ""}
    ).encode()
    headers = {"Content-Type": "application/json", "X-Signature": sign(SECRET, body)}
    status, answer = post(behind_nginx.ports["nginx"], "/webhooks/gw/ussd", body, headers, ALLOWED)
    assert status == 200 and json.loads(answer)["action"] == "continue", answer
