"""Security headers and cookie flags."""

from __future__ import annotations

from tests.support.web import (
    EMAILS,
    PASSWORD,
    csrf_token,
    login_as,
    make_app,
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
