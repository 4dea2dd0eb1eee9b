"""Security headers and cookie flags."""

from __future__ import annotations

import pytest

from cloud.errors import ConfigError
from tests.support.web import (
    EMAILS,
    PASSWORD,
    csrf_token,
    login_as,
    make_app,
    sent_mail,
)


def test_every_page_has_the_security_headers(client):
    login_as(client, "admin_a")
    for path in (
        "/",
        "/login",
        "/terminals/TA1",
        "/terminals/TA1/series.json?channel=leak1.ior",
        "/static/app.css",
        "/does-not-exist",
    ):
        h = client.get(path).headers
        csp = h["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Referrer-Policy"] == "same-origin"
        # Plain HTTP: no HSTS (it would be ignored, and it is wrong on a test rig).
        assert "Strict-Transport-Security" not in h


def test_hsts_on_https(client):
    response = client.get("/login", base_url="https://mimamori.test")
    assert response.headers["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains")


def test_https_behind_a_trusted_proxy(world, clock):
    app = make_app(world, clock, trusted_proxies=1)
    response = app.test_client().get(
        "/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
    )
    assert "Strict-Transport-Security" in response.headers


def test_untrusted_forwarded_headers_change_nothing(client):
    response = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


def test_pages_carry_no_inline_script(client):
    login_as(client, "admin_a")
    for path in ("/", "/terminals/TA1", "/terminals/TA1/settings", "/alarms", "/targets"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>" not in html and " onclick=" not in html and "javascript:" not in html
        assert "<script src=" in html, path


def test_session_cookie_is_secure_httponly_samesite(world, clock):
    app = make_app(world, clock, cookie_secure=True)
    c = app.test_client()
    token = csrf_token(c, "/login")
    response = c.post(
        "/login",
        base_url="https://mimamori.test",
        data={"csrf_token": token, "email": EMAILS["viewer_a"], "password": PASSWORD},
    )
    cookies = response.headers.getlist("Set-Cookie")
    session_cookie = next(v for v in cookies if v.startswith("mimamori_session="))
    flags = [f.strip().lower() for f in session_cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags


def test_pages_with_customer_data_are_not_cached(client):
    login_as(client, "admin_a")
    assert client.get("/").headers["Cache-Control"] == "no-store"
    assert (
        client.get("/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-09").headers[
            "Cache-Control"
        ]
        == "no-store"
    )


def test_uplot_is_served_from_the_npm_package(client):
    js = client.get("/vendor/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and b"uPlot" in js.data
    assert client.get("/vendor/uplot/uPlot.min.css").status_code == 200
    # Only the two files, nothing else from node_modules.
    assert client.get("/vendor/uplot/package.json").status_code == 404
    assert client.get("/vendor/uplot/..%2F..%2Fpackage.json").status_code == 404


GOOD_KEY = "Zq8vN3xR0kTfW6yLm2Pc9sHd4Gb7Jn1Ue5Ai0Ko8Vr3"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"site_url": ""}, "site_url"),
        ({"secret_key": ""}, "secret_key"),
        ({"secret_key": "change-me-to-a-long-random-string-please"}, "secret_key"),
        ({"secret_key": "x" * 48}, "secret_key"),
        ({"secret_key": "too-short-1A"}, "secret_key"),
    ],
)
def test_a_production_site_refuses_to_start_without_a_site_url_and_a_real_secret(
    world, clock, overrides, named
):
    options = {"site_url": "https://mimamori.example.com", "secret_key": GOOD_KEY, **overrides}
    with pytest.raises(ConfigError, match=named):
        make_app(world, clock, **options)


def test_a_development_site_may_start_without_them(world, clock):
    app = make_app(world, clock, development=True, site_url="", secret_key="")
    assert app.test_client().get("/login").status_code == 200


def test_a_forwarded_host_is_never_trusted_even_from_a_trusted_proxy(world, clock):
    # Development only: without a site URL, links use the request's own Host.
    app = make_app(world, clock, development=True, site_url="", trusted_proxies=1)
    client = app.test_client()
    token = csrf_token(client, "/password/reset")
    client.post(
        "/password/reset",
        data={"csrf_token": token, "email": EMAILS["operator"]},
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "198.51.100.4"},
    )
    (mail,) = sent_mail(app)
    assert "http://localhost/password/reset/" in mail.body and "evil.example" not in mail.body


def test_reset_links_never_take_their_host_from_the_request(world, clock):
    app = make_app(world, clock, trusted_proxies=1, site_url="https://mimamori.example.com")
    client = app.test_client()
    forged = {"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "198.51.100.4"}
    token = csrf_token(client, "/password/reset")
    client.post(
        "/password/reset",
        data={"csrf_token": token, "email": EMAILS["operator"]},
        headers=forged,
    )
    (mail,) = sent_mail(app)
    assert "https://mimamori.example.com/password/reset/" in mail.body
    assert "evil.example" not in mail.body
