"""What the web site (:mod:`cloud.web`) and the REST API (:mod:`cloud.api`)
share on top of Flask: the app's collaborators and the per-request helpers
(:mod:`cloud.http.context`), and the web role's settings
(:mod:`cloud.http.settings`). Imports neither the site nor the API."""
