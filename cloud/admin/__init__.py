"""``mimamori-admin``: install a production site and manage it from the shell.

``install`` creates what the processes need and never creates themselves
(directories, the PostgreSQL role and database, the InfluxDB database and
its least-privilege account, the broker's configuration, the environment
file, systemd units); ``create-operator`` makes the first operator.
See docs/deployment.md.
"""
