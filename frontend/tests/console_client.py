"""The console as a browser speaks to it, for the console's host tests: one HTTPS request
per connection (verified with the frontend's CA bundle, which the harness points Python's
default `ssl` context at), the cookies a response sets, the CSRF token of a page, signing in."""

import http.client
import re
import ssl
import urllib.parse

from ec2_client import EP
URL = urllib.parse.urlsplit(EP)
CONTEXT = ssl.create_default_context()


def request(method, path, cookies=None, form=None):
    """One request on a fresh connection: (status, headers as a list of pairs, body text)."""
    conn = http.client.HTTPSConnection(URL.hostname, URL.port, context=CONTEXT, timeout=30)
    headers = {}
    body = None
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    out = (resp.status, resp.getheaders(), text)
    conn.close()
    return out


def header(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def set_cookies(headers):
    """The cookies a response sets: name -> (value, attributes)."""
    out = {}
    for line in header(headers, "Set-Cookie"):
        pair, _, attrs = line.partition(";")
        name, _, value = pair.partition("=")
        out[name.strip()] = (value, attrs)
    return out


def csrf_of(page):
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def sign_in_form():
    status, headers, page = request("GET", "/_console/signin")
    assert status == 200, (status, page)
    assert '<meta name="viewport"' in page, page
    cookie = set_cookies(headers)["__Host-mallee-signin"][0]
    return {"__Host-mallee-signin": cookie}, csrf_of(page)


def try_sign_in(user, password):
    cookies, token = sign_in_form()
    return request(
        "POST", "/_console/signin", cookies, {"csrf": token, "user": user, "password": password}
    )


def sign_in(user, password):
    status, headers, page = try_sign_in(user, password)
    assert status == 303, (status, page)
    assert header(headers, "Location") == ["/_console/instances"], headers
    value, attrs = set_cookies(headers)["__Host-mallee-session"]
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"]:
        assert attr in attrs, attrs
    cookies = {"__Host-mallee-session": value}
    status, _, page = request("GET", "/_console/instances", cookies)
    assert status == 200, (status, page)
    return cookies, csrf_of(page)
