"""The PostgreSQL part of an install: the service's role and its databases.

Runs ``psql`` (Debian package ``postgresql-client``) as a superuser: on the
database host as the ``postgres`` system user over the local socket (peer
authentication, no password anywhere), or with a connection string naming
one (``--pg-admin``). The role's password travels in the script on stdin,
never on a command line. Idempotent: a rerun creates nothing twice and sets
the same password again.
"""

from __future__ import annotations

import os

from cloud.admin.errors import AdminError
from cloud.admin.system import require_tool, run

ROLE = r"""\set ON_ERROR_STOP on
\set role {role}
\set password {password}
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
"""
DATABASE = r"""\set database {database}
SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8''', :'database', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') \gexec
SELECT d.datname || (CASE WHEN d.datdba = r.oid THEN ' owned by ' ELSE ' NOT owned by ' END)
       || r.rolname
  FROM pg_database d, pg_roles r WHERE d.datname = :'database' AND r.rolname = :'role';
"""


def _plain(name: str, value: str) -> str:
    # Generated names and passwords only: letters, digits, - and _.
    if not value or not value.replace("_", "").replace("-", "").isalnum():
        raise AdminError(f"{name} {value!r}: use letters, digits, - and _ only")
    return value


def provision(
    role: str, databases: list[str], password: str, admin_conninfo: str = ""
) -> list[str]:
    """Create ``role`` (login, no other rights) and ``databases`` owned by it,
    and set the role's password. With ``admin_conninfo`` empty psql runs as
    the ``postgres`` system user on the local socket. Returns one line per
    database ("<name> owned by <role>").

    Raises :class:`AdminError` with psql's message when it fails, or when
    a database exists but belongs to another role.
    """
    script = ROLE.format(role=_plain("role", role), password=_plain("password", password))
    script += "".join(DATABASE.format(database=_plain("database", d)) for d in databases)
    psql = require_tool("psql", "postgresql-client")
    cmd = [psql, "--no-psqlrc", "--quiet", "--tuples-only", "--no-align"]
    if admin_conninfo:
        cmd += ["--dbname", admin_conninfo]
    elif os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd, "--dbname", "postgres"]
    else:
        raise AdminError("creating the databases needs root (psql as postgres) or --pg-admin")
    report = [line for line in run(cmd, "psql", stdin=script).splitlines() if line.strip()]
    for line in report:
        if "NOT owned" in line:
            raise AdminError(f"PostgreSQL: {line}: choose another --db-name or change its owner")
    return report
