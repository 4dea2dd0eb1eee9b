"""Business logic the web site and the REST API share: functions taking a
Session and plain values.

Nothing here imports Flask. The site's views and the API's views translate
requests into calls and :mod:`cloud.services.errors` exceptions into
responses; tests call these directly. Collaborators with a side outside the
database come in as arguments behind small interfaces
(:class:`~cloud.services.publisher.Publisher`,
:class:`~cloud.services.mailer.Mailer`).
"""
