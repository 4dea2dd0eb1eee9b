"""The InfluxDB part of an install: the database, once, and the service's account.

The processes never create databases (:meth:`InfluxStore.prepare` only
checks), so the account they use needs no admin rights: ``GRANT ALL ON
<database>`` gives it read and write there (what the store's writes,
``SELECT ... INTO`` rollups and ``DELETE`` need) and nothing elsewhere.
"""

from __future__ import annotations

from cloud.admin.errors import AdminError
from cloud.errors import TimeseriesError
from cloud.timeseries.influx_wire import InfluxClient, quote_ident, quote_str


def provision(
    client: InfluxClient, database: str, username: str, password: str
) -> tuple[bool, bool]:
    """Create ``database`` if missing and give ``username`` (created if
    missing, its password set to ``password`` either way) read and write on
    it. ``client`` must speak as an InfluxDB admin. Idempotent.

    Returns (database created, user created). Raises :class:`AdminError`
    if the server refuses, or if ``username`` is an admin already (the
    service must not run with admin rights).
    """
    db, user = quote_ident(database), quote_ident(username)
    try:
        (shown,) = client.query("", ["SHOW DATABASES"])
        databases = {row[0] for s in shown.get("series", []) for row in s.get("values", [])}
        (listed,) = client.query("", ["SHOW USERS"])
        users = {row[0]: row[1] for s in listed.get("series", []) for row in s.get("values", [])}
        if users.get(username):
            raise AdminError(
                f"InfluxDB user {username!r} is an admin; the service's account must not "
                "be one: choose another --influx-user"
            )
        statements = [f"CREATE DATABASE {db}"] if database not in databases else []
        if username in users:
            statements.append(f"SET PASSWORD FOR {user} = {quote_str(password)}")
        else:
            statements.append(f"CREATE USER {user} WITH PASSWORD {quote_str(password)}")
        statements.append(f"GRANT ALL ON {db} TO {user}")
        client.query("", statements)
    except TimeseriesError as err:
        raise AdminError(
            f"InfluxDB at {client.scheme}://{client.host}:{client.port}: {err}"
        ) from err
    return database not in databases, username not in users
