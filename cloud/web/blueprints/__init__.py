"""Blueprints of the web site: thin views over :mod:`cloud.services`."""
