#!/usr/bin/env python3
"""The dashboard in a real headless Chromium (driven over WebDriver by
chromedriver; Debian's chromium + chromium-driver, python3's standard library
only). Guards: the page loads from the binary and, given the token in its
URL's fragment, uses it for the API and its event stream (the API refuses a
request without it), and shows the fleet's N guests;
"scale" on the page changes the count; a guest whose qemu is SIGKILLed turns
to its restarting colour and back to ready, read back from the canvas; the
guest panel shows its console. Saves build/web/dashboard.png.

Run by `make check-web` (NF_BIN, NF_GUEST_DIR). With --measure N --qemu FAKE
it instead runs N fake guests and prints the /metrics scrape time and the
page's load time (until every guest is drawn), for the README's numbers;
--demo N --qemu FAKE takes the README's picture (build/web/dashboard-demo.png).
"""
import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("NF_BIN", "./nervesfleet")
OUT_DIR = os.path.join(os.environ.get("NF_SRCDIR", "."), "build", "web")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync",
               "--disable-dev-shm-usage", "--window-size=1400,900"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, fn, timeout):
    """fn() until it returns a true value; each call blocks on the browser or
    the process, so this waits on events with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Fleet:
    def __init__(self, tmp, n, extra):
        env = dict(os.environ, XDG_RUNTIME_DIR=f"{tmp}/run", XDG_STATE_HOME=f"{tmp}/state",
                   XDG_CACHE_HOME=f"{tmp}/cache")
        if os.environ.get("NF_GUEST_DIR"):
            env["NERVESFLEET_GUEST_DIR"] = os.environ["NF_GUEST_DIR"]
        os.makedirs(f"{tmp}/run", mode=0o700, exist_ok=True)
        self.log = open(f"{tmp}/fleet.log", "w+")
        self.proc = subprocess.Popen([BIN, "run", str(n), "--name", "webui", "--http",
                                      "127.0.0.1:0", "--stop-timeout", "5",
                                      "--state-dir", f"{tmp}/state/webui"] + extra,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.tmp = tmp

    def output(self):
        self.log.flush()
        with open(f"{self.tmp}/fleet.log") as f:
            return f.read()

    def wait_for(self, needle, timeout):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"fleet exited: {self.output()}")
            return needle in self.output()
        wait_until(needle, seen, timeout)

    def url(self):
        return re.search(r"dashboard on (http://[0-9.]+:[0-9]+/)", self.output()).group(1)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, self.output()


class Browser:
    def __init__(self, tmp):
        self.port = free_port()
        self.driver = subprocess.Popen(["chromedriver", f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("chromedriver", self._ready, 30)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium",
            "args": CHROME_ARGS + [f"--user-data-dir={tmp}/chromium"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            return self.call("GET", "/status")["ready"]
        except OSError:
            return False

    def call(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def screenshot(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        try:
            self.s("DELETE", "")
        finally:
            self.driver.terminate()
            self.driver.wait(30)


def guests_shown(b):
    return b.js("return window.nf && nf.live ? nf.guests.size : -1")


def counter(b, label):
    return b.js("const e = document.querySelector(`[data-count='${arguments[0]}'] b`);"
                "return e ? e.textContent : null", label)


def cell_is(b, gid, state):
    return b.js("const c = nf.cellColor(arguments[0]), w = nf.stateColor(arguments[1]);"
                "return !!c && c.every((v, i) => Math.abs(v - w[i]) <= 2)", gid, state)


def test(tmp):
    # With a token, as beyond loopback: the page takes it from the URL's
    # fragment and sends it on every API call and on its event streams.
    token = "web-test-token-" + os.urandom(8).hex()
    with open(f"{tmp}/token", "w") as f:
        f.write(token + "\n")
    fleet = Fleet(tmp, 2, ["--backoff", "5", "--http-token", f"{tmp}/token"])
    browser = None
    try:
        fleet.wait_for("all 2 guests ready", 240)
        url = fleet.url()
        try:
            urllib.request.urlopen(url + "api/guests", timeout=30)
            raise AssertionError("the API answered without the token")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code
        browser = Browser(tmp)
        browser.s("POST", "/url", {"url": url + "#token=" + token})
        wait_until("2 guests on the page", lambda: guests_shown(browser) == 2, 60)
        wait_until("counter says 2", lambda: counter(browser, "total") == "2", 30)
        assert cell_is(browser, 1, "ready") and cell_is(browser, 2, "ready")
        assert "token" not in browser.s("GET", "/url"), "the token stays in the address bar"
        print("ok 1 - the page loads (token from the URL) and shows 2 ready guests")

        field = browser.element("#scale-n")
        browser.s("POST", f"/element/{field}/clear", {})
        browser.s("POST", f"/element/{field}/value", {"text": "3"})
        browser.s("POST", f"/element/{browser.element('#scale-btn')}/click", {})
        wait_until("3 guests on the page", lambda: guests_shown(browser) == 3, 30)
        wait_until("guest 3 ready", lambda: cell_is(browser, 3, "ready"), 240)
        assert counter(browser, "total") == "3"
        print("ok 2 - scale on the page grows the fleet to 3")

        pid = browser.js("return nf.guests.get(1).pid")
        assert isinstance(pid, int) and pid > 0, pid
        os.kill(pid, signal.SIGKILL)
        wait_until("guest 1 in its restarting colour", lambda: cell_is(browser, 1, "backoff"), 60)
        print("ok 3 - a SIGKILLed guest turns to its restarting colour")
        wait_until("guest 1 ready again", lambda: cell_is(browser, 1, "ready"), 240)
        print("ok 4 - and back to ready")

        browser.s("POST", f"/element/{field}/clear", {})
        browser.s("POST", f"/element/{field}/value", {"text": "2"})
        browser.s("POST", f"/element/{browser.element('#scale-btn')}/click", {})
        wait_until("2 guests on the page", lambda: guests_shown(browser) == 2, 60)
        print("ok 5 - scale on the page shrinks the fleet to 2")

        # Pick guest 1: the guest panel shows its last exit and console.
        browser.js("nf.select(1)")
        wait_until("console text", lambda: "NF-000001" in browser.js(
            "return document.getElementById('console').textContent"), 30)
        wait_until("last exit", lambda: "crashed" in browser.js(
            "return document.getElementById('g-figures').textContent"), 30)
        shot = os.path.join(OUT_DIR, "dashboard.png")
        browser.screenshot(shot)
        print(f"ok 6 - guest panel with console and last exit; screenshot {shot}")
    finally:
        if browser:
            browser.quit()
        fleet.stop()


def measure(tmp, n, qemu):
    fleet = Fleet(tmp, n, ["--qemu", qemu, "--boot-timeout", "600", "--health-interval", "10"])
    browser = None
    try:
        fleet.wait_for(f"all {n} guests ready", 600)
        url = fleet.url()
        times = []
        for _ in range(10):
            t = time.monotonic()
            with urllib.request.urlopen(url + "metrics", timeout=60) as r:
                body = r.read()
            times.append((time.monotonic() - t) * 1000)
        times.sort()
        print(f"/metrics at {n} guests: {len(body)} bytes, median {times[5]:.1f} ms, "
              f"max {times[-1]:.1f} ms")
        browser = Browser(tmp)
        t = time.monotonic()
        browser.s("POST", "/url", {"url": url})
        wait_until(f"{n} guests drawn", lambda: guests_shown(browser) == n, 120)
        print(f"page load at {n} guests (navigation to every guest drawn): "
              f"{(time.monotonic() - t) * 1000:.0f} ms")
        browser.screenshot(os.path.join(OUT_DIR, f"dashboard-{n}.png"))
    finally:
        if browser:
            browser.quit()
        fleet.stop()


def demo(tmp, n, qemu):
    """The README's picture (docs/dashboard.png): N fake guests, a few
    crashed and restarting, some stopped, the fleet just grown, one picked."""
    fleet = Fleet(tmp, n, ["--qemu", qemu, "--backoff", "30", "--backoff-max", "60"])
    browser = None
    try:
        fleet.wait_for(f"all {n} guests ready", 600)
        url = fleet.url()

        def post(path, body):
            req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
            return urllib.request.urlopen(req, timeout=60).read()
        browser = Browser(tmp)
        browser.s("POST", "/url", {"url": url})
        wait_until("drawn", lambda: guests_shown(browser) == n, 60)
        wait_until("chart samples", lambda: browser.js("return nf.stats.length") >= 4, 60)
        ps = json.loads(urllib.request.urlopen(url + "api/guests").read())
        for g in ps["guests"][37:49] + ps["guests"][n // 2:n // 2 + 4]:
            os.kill(g["pid"], signal.SIGKILL)
        post("api/guests/90-99/stop", {"wait": True})
        post("api/scale", {"count": n + 30})
        wait_until("grown", lambda: guests_shown(browser) == n + 30, 60)
        browser.js("nf.select(41)")
        wait_until("guest 41 restarting", lambda: cell_is(browser, 41, "backoff"), 30)
        wait_until("guest panel", lambda: "crashed" in browser.js(
            "return document.getElementById('g-figures').textContent"), 30)
        shot = os.path.join(OUT_DIR, "dashboard-demo.png")
        browser.screenshot(shot)
        print(f"screenshot {shot}")
    finally:
        if browser:
            browser.quit()
        fleet.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", type=int)
    ap.add_argument("--demo", type=int)
    ap.add_argument("--qemu")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="nf-web-")
    try:
        if a.measure:
            measure(tmp, a.measure, a.qemu)
        elif a.demo:
            demo(tmp, a.demo, a.qemu)
        else:
            print("1..6")
            test(tmp)
        left = subprocess.run(["pgrep", "-f", tmp], capture_output=True, text=True).stdout
        assert not left.strip(), f"processes left behind: {left}"
        if not (a.measure or a.demo):
            # Every step raises on failure, so reaching here means all six passed.
            print("check-web: 6 passed, 0 failed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
