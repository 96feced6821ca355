"""The web console in a real browser: headless Chromium driven by Selenium 4 over the
frontend's HTTPS listener. Chromium trusts exactly the frontend's certificate (its public
key's SHA-256, from the certificate the listener serves, verified with the frontend's CA
bundle) and nothing else it would not trust anyway. The flow: sign in; create a key pair and
download its private key; launch an instance from the form, watch it reach running and its
console page show the test node's boot line, terminate it; a second user sees none of it; a
cross-site form without the CSRF token is refused and changes nothing; a name with a script
in it is shown as text and runs nothing; an admin approves a pending node and sees the
zone's capacity bars grow. Screenshots of the main pages at a phone's and a desktop's size
go to SCREENSHOT_DIR.
Usage: console_browser.py ENDPOINT, with ALICE_PASSWORD, BOB_PASSWORD, ALICE_KEY,
ALICE_SECRET, ADMIN_PASSWORD_FILE, PENDING_NODE_ID, DOWNLOAD_DIR and SCREENSHOT_DIR in the
environment."""

import base64
import hashlib
import os
import socket
import ssl
import tempfile
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ec2_client import EP, client

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SIZES = [(375, 812), (1366, 900)]
URL = urllib.parse.urlsplit(EP)
DOWNLOADS = os.environ["DOWNLOAD_DIR"]
SHOTS = os.environ["SCREENSHOT_DIR"]
TIMEOUT = 60


def spki_sha256(host, port):
    """Base64 of the SHA-256 of the served certificate's SubjectPublicKeyInfo, the
    certificate verified with the CA bundle the harness points `ssl` at."""
    ctx = ssl.create_default_context()
    with socket.create_connection((host, port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={spki_sha256(URL.hostname, URL.port)}",
        f"--window-size={SIZES[1][0]},{SIZES[1][1]}",
    ]:
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {
            "download.default_directory": DOWNLOADS,
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    return d


def wait_for(what, cond, timeout=TIMEOUT):
    """Polls `cond` until it returns something truthy; fails naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def go(d, path):
    d.get(EP + path)


def text(d):
    return d.find_element(By.TAG_NAME, "body").text


def click_and_wait(button):
    """Clicks `button` and waits until the page it was on has been replaced by the answer (a
    form posted from a page often lands on the same URL, so the URL cannot tell): the old
    document carries a mark the new one does not."""
    d = button.parent
    d.execute_script("window.malleeOldPage = true")
    button.click()
    WebDriverWait(d, 30).until(
        lambda d: d.execute_script(
            "return window.malleeOldPage === undefined && document.readyState === 'complete'"
        )
    )


def submit(form):
    click_and_wait(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def shoot(d, name):
    """Screenshots of the current page with a viewport of each of SIZES (the narrow one as a
    phone), then back to the window's own."""
    for w, h in SIZES:
        metrics = {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600}
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        assert d.save_screenshot(os.path.join(SHOTS, f"{name}-{w}x{h}.png")), name
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def sign_in(d, user, password):
    go(d, "/_console/signin")
    d.find_element(By.NAME, "user").send_keys(user)
    d.find_element(By.NAME, "password").send_keys(password)
    submit(d.find_element(By.CSS_SELECTOR, "form.card"))
    wait_for("the instances page", lambda: d.current_url.endswith("/_console/instances"))
    assert d.find_element(By.TAG_NAME, "h1").text == "Instances", text(d)


def sign_out(d):
    click_and_wait(d.find_element(By.CSS_SELECTOR, "form[action='/_console/signout'] button"))
    wait_for("the sign-in page", lambda: d.current_url.endswith("/_console/signin"))


def no_script_ran(d):
    try:
        d.switch_to.alert
    except NoAlertPresentException:
        pass
    else:
        raise AssertionError("an alert opened")
    assert d.execute_script("return window.__mallee_xss === undefined"), "an injected script ran"


def create_key_pair(d, name):
    """Creates `name` in the key pairs form; the downloaded private key's path."""
    go(d, "/_console/keypairs")
    form = d.find_element(By.CSS_SELECTOR, "form[action='/_console/keypairs']")
    form.find_element(By.NAME, "name").send_keys(name)
    Select(form.find_element(By.NAME, "type")).select_by_value("ed25519")
    before = set(os.listdir(DOWNLOADS))
    # The answer is a download: the page stays, so there is no new page to wait for.
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def downloaded():
        new = [f for f in set(os.listdir(DOWNLOADS)) - before if f.endswith(".pem")]
        return new and os.path.join(DOWNLOADS, new[0])

    return wait_for(f"the private key of {name!r} to download", downloaded)


def instance_row(d, iid):
    rows = [r for r in d.find_elements(By.CSS_SELECTOR, "table.list tbody tr") if iid in r.text]
    return rows[0] if rows else None


def state_of(d, iid):
    """The instances page's state cell of `iid`, reloaded."""
    go(d, "/_console/instances")
    row = instance_row(d, iid)
    return row and row.find_element(By.CSS_SELECTOR, "td[data-label=State]").text


def zone_meters(d):
    """The nodes page's first zone's vCPU and memory bars: (value, max) each."""
    go(d, "/_console/admin/nodes")
    cells = d.find_elements(By.CSS_SELECTOR, "tr.zone meter")
    return [(m.get_attribute("value"), m.get_attribute("max")) for m in cells[:2]]


os.makedirs(SHOTS, exist_ok=True)
alice_pw, bob_pw = os.environ["ALICE_PASSWORD"], os.environ["BOB_PASSWORD"]
ec2 = client(key=os.environ["ALICE_KEY"], secret=os.environ["ALICE_SECRET"])
with open(os.environ["ADMIN_PASSWORD_FILE"]) as f:
    admin_pw = f.read().strip()

# An image alice can run, registered through the API as a user would.
s3 = client("s3", key=os.environ["ALICE_KEY"], secret=os.environ["ALICE_SECRET"])
s3.create_bucket(Bucket="alice-img")
s3.put_object(Bucket="alice-img", Key="root.img", Body=os.urandom(4096))
emi = ec2.register_image(Name="browser-root", ImageLocation="alice-img/root.img")["ImageId"]

profile = tempfile.mkdtemp(prefix="mallee-chromium-")
d = browser(profile)
try:
    # Signing in: the page a stranger is sent to.
    go(d, "/_console/instances")
    wait_for("the sign-in page", lambda: d.current_url.endswith("/_console/signin"))
    shoot(d, "signin")
    sign_in(d, "alice", alice_pw)

    # A key pair: the private key downloads once, as an OpenSSH private key.
    pem_path = create_key_pair(d, "browser-key")
    assert os.path.basename(pem_path) == "browser-key.pem", pem_path
    with open(pem_path, "rb") as f:
        pem = f.read()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"), pem[:40]
    serialization.load_ssh_private_key(pem, password=None)
    go(d, "/_console/keypairs")
    assert "browser-key" in text(d) and "PRIVATE KEY" not in d.page_source

    # A name with a script in it is text on the page and runs nothing.
    evil = "<script>window.__mallee_xss=1;alert(1)</script>"
    create_key_pair(d, evil)
    go(d, "/_console/keypairs")
    names = [c.text for c in d.find_elements(By.CSS_SELECTOR, "td[data-label=Name]")]
    assert evil in names, names
    no_script_ran(d)
    assert not d.find_elements(By.CSS_SELECTOR, "main script"), d.page_source
    shoot(d, "keypairs")

    # A form on another site posting to the console without the CSRF token: the browser
    # sends it (with whatever cookies it would), the console refuses it and makes nothing.
    forged = (
        "<!doctype html><form id=f method=post "
        f'action="{EP}/_console/keypairs"><input name=name value=forged></form>'
    )
    d.get("data:text/html;base64," + base64.b64encode(forged.encode()).decode())
    d.execute_script("document.getElementById('f').submit()")
    wait_for("the refusal page", lambda: d.current_url.startswith(EP))
    refused = text(d)
    assert "Something went wrong" in refused, refused
    assert "did not come from this console" in refused or "sign in again" in refused, refused
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    assert "forged" not in keys, keys

    # Launch from the form: the image, a type, the key pair, the default group, user data.
    go(d, "/_console/instances")
    form = d.find_element(By.CSS_SELECTOR, "form.launch")
    Select(form.find_element(By.NAME, "image")).select_by_value(emi)
    Select(form.find_element(By.NAME, "type")).select_by_value("m1.small")
    Select(form.find_element(By.NAME, "key")).select_by_value("browser-key")
    Select(form.find_element(By.NAME, "group")).select_by_value("default")
    form.find_element(By.NAME, "user_data").send_keys("#!/bin/sh\necho hello\n")
    submit(form)
    wait_for("the instances page", lambda: d.current_url.endswith("/_console/instances"))
    assert "not launched" not in text(d), text(d)
    mine = ec2.describe_instances()["Reservations"]
    iids = [i["InstanceId"] for r in mine for i in r["Instances"]]
    assert len(iids) == 1, iids
    iid = iids[0]
    described = mine[0]["Instances"][0]
    assert described["ImageId"] == emi and described["KeyName"] == "browser-key", described
    wait_for(f"{iid} to show running", lambda: state_of(d, iid) == "running")
    shoot(d, "instances")

    # Its console page shows what the node reported from the guest.
    marker = f"mallee test node: booted {iid}"

    def console_has_marker():
        go(d, f"/_console/instances/{iid}/console")
        pres = d.find_elements(By.CSS_SELECTOR, "pre.console")
        return pres and marker in pres[0].text

    wait_for("the console output", console_has_marker)
    shoot(d, "console-output")

    go(d, "/_console/credentials")
    assert "AWS credentials file" in text(d), text(d)
    shoot(d, "credentials")

    # Terminate from the list.
    go(d, "/_console/instances")
    click_and_wait(instance_row(d, iid).find_element(By.CSS_SELECTOR, "button.danger"))
    wait_for(f"{iid} to terminate", lambda: state_of(d, iid) in ("shutting-down", "terminated"))
    wait_for(f"{iid} to be terminated", lambda: state_of(d, iid) == "terminated")
    sign_out(d)

    # Bob sees none of alice's resources.
    sign_in(d, "bob", bob_pw)
    assert iid not in d.page_source and "You have no instances" in text(d), text(d)
    assert emi not in d.page_source, "alice's private image offered to bob"
    go(d, "/_console/keypairs")
    assert "browser-key" not in d.page_source and "You have no key pairs" in text(d), text(d)
    go(d, f"/_console/instances/{iid}/console")
    assert marker not in text(d), text(d)
    sign_out(d)

    # The admin approves the pending node; once it registers, the zone's bars grow.
    sign_in(d, "admin", admin_pw)
    pending = os.environ["PENDING_NODE_ID"]
    before = zone_meters(d)
    assert len(before) == 2, before
    card = d.find_element(By.ID, f"node-{pending}")
    assert "pending" in card.text, card.text
    click_and_wait(card.find_element(By.CSS_SELECTOR, f"form[action$='/{pending}/approve'] button"))
    wait_for("the nodes page", lambda: d.current_url.endswith("/_console/admin/nodes"))
    after = wait_for("the zone's capacity to grow", lambda: (m := zone_meters(d)) != before and m)
    for (_, old_max), (_, new_max) in zip(before, after):
        assert int(new_max) > int(old_max), (before, after)
    shoot(d, "admin-nodes")
    go(d, "/_console/admin/users")
    assert "alice" in text(d) and "bob" in text(d), text(d)
    shoot(d, "admin-users")
    go(d, "/_console/admin/audit?user=alice")
    assert "RunInstances" in text(d) and "TerminateInstances" in text(d), text(d)
    shoot(d, "admin-audit")
    no_script_ran(d)
finally:
    d.quit()

print("ok console browser")
