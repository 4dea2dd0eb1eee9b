"""The one-command demo: ``python -m cloud.demo`` (see ``docs/demo.md``).

- ``__main__``: the launcher (files, ports, children, start and stop order);
- ``seed``: the demo customer, logins, terminals, rules and mail targets;
- ``mailsink``, ``chatsink``, ``sftpsink``: the customer's side (mail, chat, file server);
- ``broker``: Mosquitto with the shipped configuration on free ports;
- ``procs``: child processes in their own groups, stopped without orphans.
"""
