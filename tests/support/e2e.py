"""The whole chain on one host, for end-to-end tests: broker accounts, a seeded
database and the ingest worker as a process.

- :data:`ACCOUNTS` holds the broker accounts of one virtual terminal
  (:data:`TID`) and of the ingest and web service roles;
- :func:`seed_site` registers a customer with a customer-admin user and the
  contracted terminal in a migrated database.

The ingest worker runs as :class:`tests.support.ingest.IngestProcess`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.broker import account_from_row
from cloud.models import Customer, Role, Terminal, User
from cloud.services.passwords import Passwords
from tests.support.virtual_terminal import password
from tests.support.web import EMAILS, PASSWORD, World

TID = "VE1"
INGEST_PASSWORD = "pw-ingest"  # throw-away account of a test broker
WEB_PASSWORD = "pw-web"
ACCOUNTS = [
    account_from_row(TID, password(TID), "terminal"),
    account_from_row("ingest", INGEST_PASSWORD, "ingest"),
    account_from_row("web", WEB_PASSWORD, "web"),
]
ADMIN_EMAIL = EMAILS["admin_a"]


def seed_site(world: World, tid: str = TID) -> dict[str, Any]:
    """A customer (English), its customer admin (``ADMIN_EMAIL``/``PASSWORD``)
    and terminal ``tid`` under contract since yesterday; returns their ids."""
    pw = Passwords(1, 8192, 1, 10).hash(PASSWORD)
    with world.session() as s:
        customer = Customer(name="E2E Denki", timezone="Asia/Tokyo", language="en")
        s.add(customer)
        s.flush()
        admin = User(
            email=ADMIN_EMAIL,
            password_hash=pw,
            role=Role.CUSTOMER_ADMIN,
            customer_id=customer.id,
            language="en",
        )
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
        s.add_all(
            [
                admin,
                Terminal(
                    id=tid,
                    customer_id=customer.id,
                    name="E2E substation",
                    contract_start=yesterday,
                    registered_on=yesterday,
                ),
            ]
        )
        s.commit()
        return {"customer": customer.id, "admin": admin.id}
