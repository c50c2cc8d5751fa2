#!/usr/bin/env python3
"""tests/soak/soak.py: a seeded random schedule of faults against a fleet of
real sim guests with disks, checking the supervisor's promises after each.

Faults (one at a time, on a random guest): kill -9 of qemu, SIGSTOP long
enough to be called hung, SIGSTOP/SIGCONT shorter than the health deadline,
a kernel panic, poweroff and watchdog starvation typed on the console,
scale up and back down, reflash, balloon changes, kill -9 of the daemon
supervisor followed by a new `run -d` (adoption), and control clients that
disconnect mid-stream.

Invariants, after every fault (and at the end, after `down`):
  - the fault is classified as what it was (status.json last_exit), tallied
    per class, expected vs seen;
  - every guest is ready again within its bound (or `failed` by policy);
  - every qemu on the host of this fleet is one `ps --json` names (no
    orphan), and status.json agrees with `ps --json` (state, pid);
  - the guest's /data boot counter (its console says
    "nervesfleet-data boots=N") never goes backwards, except by reflash;
  - the supervisor's RSS and open fds stay under a bound;
  - at the end: no process, socket, pid file or cgroup left, and every
    overlay passes `qemu-img check`.
Any break stops the run, printing the seed and the step to replay it.

  tests/soak/soak.py [--guests N] [--faults F] [--seed S]
  (NF_BIN: the binary, default ./nervesfleet; NF_GUEST_DIR: the guest)
"""
import argparse
import glob
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

NF = os.environ.get("NF_BIN", os.path.abspath("nervesfleet"))
BOOT_BOUND = float(os.environ.get("SOAK_BOOT_BOUND", "240"))  # s, a loaded 2-core box
CLASSES = ["kill9", "hang", "pause", "panic", "poweroff", "watchdog", "scale", "reflash",
           "balloon", "supkill", "client"]
# What status.json's last_exit must say after each fault; None: no exit at all.
EXPECT = {"kill9": "crashed", "hang": "hung", "pause": None, "panic": "panic",
          "poweroff": "poweroff", "watchdog": "watchdog", "balloon": None, "supkill": None,
          "client": None}


class Broken(Exception):
    pass


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = tempfile.mkdtemp(prefix="nf-soak-", dir=args.work)
        self.name = "soak%d" % (args.seed % 100000)
        self.env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.work, "state"),
                        XDG_RUNTIME_DIR=os.path.join(self.work, "run"),
                        NERVESFLEET_NAME=self.name)
        if os.environ.get("NF_GUEST_DIR"):
            self.env["NERVESFLEET_GUEST_DIR"] = os.environ["NF_GUEST_DIR"]
        os.makedirs(self.env["XDG_RUNTIME_DIR"], mode=0o700)
        self.count = args.guests
        self.step = 0
        self.retyped = 0  # console lines the guest's shell swallowed, typed again
        self.tally = {c: [0, 0] for c in CLASSES}  # class -> [expected, seen as expected]
        self.boots = {}  # guest id -> last boot count seen
        self.base_fds = self.base_rss = None
        self.max_fds = self.max_rss = 0
        self.state_dir = os.path.join(self.env["XDG_STATE_HOME"], "nervesfleet", self.name)
        self.run_dir = os.path.join(self.env["XDG_RUNTIME_DIR"], "nervesfleet", self.name)

    # --- the CLI ---------------------------------------------------------------
    def nf(self, *argv, check=True, timeout=300, stdin=None):
        p = subprocess.run([NF] + list(argv), env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=stdin)
        if check and p.returncode != 0:
            raise Broken("`nervesfleet %s` exited %d: %s%s" % (" ".join(argv), p.returncode,
                                                              p.stdout[-2000:], p.stderr[-2000:]))
        return p

    def run_args(self):
        base = os.path.join(self.work, "data.img")
        return ["run", str(self.count), "-d", "--name", self.name, "--disk", base,
                "--restart", "always", "--backoff", "0.5", "--backoff-max", "4",
                "--max-restarts", "1000", "--restart-window", "5", "--health-interval", "2",
                "--health-timeout", "4", "--heartbeat-timeout", "0", "--stop-timeout", "5",
                "--boot-timeout", str(int(BOOT_BOUND)), "--append", "nf.wdt_timeout=6"]

    def ps(self):
        return json.loads(self.nf("ps", "--json").stdout)

    def guests(self):
        return {g["id"]: g for g in self.ps()["guests"]}

    def status(self, gid):
        with open(os.path.join(self.state_dir, "vm-%04d" % gid, "status.json")) as f:
            return json.load(f)

    def supervisor_pid(self):
        with open(os.path.join(self.run_dir, "fleet.lock")) as f:
            return int(f.read().split()[0])

    def wait_all_ready(self, what):
        deadline = time.monotonic() + BOOT_BOUND
        while True:
            gs = self.guests()
            bad = {i: g["state"] for i, g in gs.items() if g["state"] not in ("ready", "failed")}
            if not bad and len(gs) == self.count:
                return gs
            if time.monotonic() > deadline:
                raise Broken("%s: not ready within %.0f s: %s" % (what, BOOT_BOUND, bad))
            time.sleep(0.5)

    def wait_exit(self, gid, before_at, what):
        """Waits until guest gid records an exit newer than before_at; its kind."""
        deadline = time.monotonic() + BOOT_BOUND
        while time.monotonic() < deadline:
            st = self.status(gid)
            if st.get("last_exit_at_us", 0) != before_at:
                return st.get("last_exit")
            time.sleep(0.3)
        raise Broken("%s: guest %d recorded no exit within %.0f s" % (what, gid, BOOT_BOUND))

    def console(self, gid, text):
        """Types `text` on guest gid's console until its echo shows in the log.

        busybox ash asks the terminal for the cursor position (ESC [6n) at
        each prompt and may swallow keys that arrive while it waits for the
        answer; such a loss is the guest's, counted, and typed again."""
        log = os.path.join(self.state_dir, "vm-%04d" % gid, "console.log")
        for attempt in range(4):
            start = os.path.getsize(log) if os.path.exists(log) else 0
            # The end of stdin detaches after sending what was read.
            self.nf("console", str(gid), stdin=text + "\n", timeout=60)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with open(log, errors="replace") as f:
                        f.seek(start if os.path.getsize(log) >= start else 0)
                        if text[:20] in f.read():
                            return
                except OSError:
                    pass
                time.sleep(0.2)
            self.retyped += 1
        raise Broken("console input to guest %d never echoed: %r" % (gid, text))

    # --- faults ----------------------------------------------------------------
    def fault(self, cls):
        gs = self.guests()
        ready = sorted(i for i, g in gs.items() if g["state"] == "ready")
        if not ready:
            raise Broken("no ready guest to fault")
        gid = self.rng.choice(ready)
        g = gs[gid]
        before = self.status(gid)
        at = before.get("last_exit_at_us", 0)
        pid = g["pid"]
        seen = "?"
        if cls == "kill9":
            os.kill(pid, signal.SIGKILL)
        elif cls == "hang":
            os.kill(pid, signal.SIGSTOP)
        elif cls == "pause":
            os.kill(pid, signal.SIGSTOP)
            time.sleep(1)
            os.kill(pid, signal.SIGCONT)
        elif cls == "panic":
            self.console(gid, "echo 1 >/proc/sys/kernel/sysrq; echo c >/proc/sysrq-trigger")
        elif cls == "poweroff":
            self.console(gid, "poweroff -f")
        elif cls == "watchdog":
            self.console(gid, "kill -9 $(pidof watchdog)")
        elif cls == "balloon":
            self.nf("balloon", str(gid), self.rng.choice(["96M", "112M", "128M"]), "--timeout", "30")
        elif cls == "client":
            self.client_disconnect(gid)
        elif cls == "scale":
            up = self.count + self.rng.randint(1, 2)
            self.nf("scale", str(up), "--wait", "--timeout", str(int(BOOT_BOUND)))
            self.nf("scale", str(self.count))
            for i in range(self.count + 1, up + 1):
                self.boots.pop(i, None)
            seen = "scaled"
        elif cls == "reflash":
            self.nf("reflash", str(gid), "--wait", "--timeout", str(int(BOOT_BOUND)))
            self.boots[gid] = 0
            seen = "reflashed"
        elif cls == "supkill":
            sup = self.supervisor_pid()
            os.kill(sup, signal.SIGKILL)
            wait_gone(sup)
            self.nf(*self.run_args())
            after = self.wait_all_ready("after re-adoption")
            moved = {i: (gs[i]["pid"], after[i]["pid"]) for i in gs
                     if gs[i]["state"] == "ready" and i in after and after[i]["pid"] != gs[i]["pid"]}
            if moved:
                raise Broken("re-adoption restarted guests (old, new pid): %s" % moved)
        exp = EXPECT.get(cls, seen)
        if cls in EXPECT and exp is not None:
            seen = self.wait_exit(gid, at, cls)
        elif cls in EXPECT:
            time.sleep(0.5)
            seen = None if self.status(gid).get("last_exit_at_us", 0) == at else \
                self.status(gid).get("last_exit")
        self.tally[cls][0] += 1
        if seen == exp:
            self.tally[cls][1] += 1
        else:
            raise Broken("%s on guest %d classified %r, expected %r (reason: %s)" % (
                cls, gid, seen, exp, self.status(gid).get("last_exit_reason")))
        return gid

    def client_disconnect(self, gid):
        kind = self.rng.choice([["events", "--json"], ["logs", str(gid), "-f"],
                                ["console", str(gid), "--ro"]])
        p = subprocess.Popen([NF] + kind, env=self.env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        # Mid-stream: after its first bytes (logs and console replay at once;
        # events may have nothing to say), or a moment, whichever is first.
        select.select([p.stdout], [], [], 3)
        p.kill()
        p.wait()
        self.nf("ps")  # the supervisor still answers

    # --- invariants --------------------------------------------------------------
    def check(self, what):
        gs = self.wait_all_ready(what)
        # No orphans: every qemu of this fleet is one the supervisor names.
        named = {g["pid"] for g in gs.values() if g["pid"]}
        running = set(qemu_pids(self.run_dir))
        if running != named:
            raise Broken("%s: qemu processes %s, ps --json names %s" % (what, sorted(running),
                                                                      sorted(named)))
        for i, g in gs.items():
            st = self.status(i)
            if (st["state"], st["pid"]) != (g["state"], g["pid"]):
                raise Broken("%s: guest %d status.json says %s pid %s, ps --json %s pid %s" % (
                    what, i, st["state"], st["pid"], g["state"], g["pid"]))
            n = last_boot_count(os.path.join(self.state_dir, "vm-%04d" % i))
            if n is not None:
                if n < self.boots.get(i, 0):
                    raise Broken("%s: guest %d boot counter went back from %d to %d" % (
                        what, i, self.boots[i], n))
                self.boots[i] = n
        sup = self.supervisor_pid()
        fds = len(os.listdir("/proc/%d/fd" % sup))
        rss = proc_rss_kib(sup)
        if self.base_fds is None:
            self.base_fds, self.base_rss = fds, rss
        self.max_fds, self.max_rss = max(self.max_fds, fds), max(self.max_rss, rss)
        # Bounds: a few fds per guest beyond the first fleet's (scale, clients
        # in flight), RSS twice the first plus 64 MiB (sanitizer builds grow).
        if fds > self.base_fds + 4 * 2 + 16:
            raise Broken("%s: supervisor fds grew from %d to %d" % (what, self.base_fds, fds))
        if rss > 2 * self.base_rss + 65536:
            raise Broken("%s: supervisor RSS grew from %d to %d KiB" % (what, self.base_rss, rss))

    def final_check(self):
        self.nf("down", "--name", self.name, timeout=120)
        left = qemu_pids(self.run_dir)
        if left:
            raise Broken("after down: qemu left running: %s" % left)
        if os.path.exists(self.run_dir):
            raise Broken("after down: runtime dir left: %s" % os.listdir(self.run_dir))
        cg = [p for p in glob.glob("/sys/fs/cgroup/**/*%s*" % self.name, recursive=True)]
        if cg:
            raise Broken("after down: cgroups left: %s" % cg)
        overlays = glob.glob(os.path.join(self.state_dir, "vm-*", "**", "*.qcow2"), recursive=True)
        overlays += glob.glob(os.path.join(self.state_dir, "disks", "**", "*.qcow2"), recursive=True)
        if not overlays:
            raise Broken("after down: no overlay found under %s" % self.state_dir)
        for o in sorted(set(overlays)):
            p = subprocess.run(["qemu-img", "check", o], capture_output=True, text=True)
            if p.returncode != 0:
                raise Broken("qemu-img check %s: %s%s" % (o, p.stdout, p.stderr))
        return len(set(overlays))

    # --- the run -------------------------------------------------------------------
    def main(self):
        t0 = time.monotonic()
        subprocess.run(["mkfs.ext4", "-q", "-F", os.path.join(self.work, "data.img"), "16M"],
                       check=True, capture_output=True)
        print("soak: %d guests, %d faults, seed %d, in %s" % (self.count, self.args.faults,
                                                            self.args.seed, self.work), flush=True)
        self.nf(*self.run_args())
        try:
            self.check("first boot")
            weights = [4, 2, 2, 2, 2, 1, 1, 1, 2, 1, 2]
            # Every class at least once (in a seeded order), then at random.
            first = list(CLASSES)
            self.rng.shuffle(first)
            for self.step in range(1, self.args.faults + 1):
                cls = first[self.step - 1] if self.step <= len(first) else \
                    self.rng.choices(CLASSES, weights)[0]
                gid = self.fault(cls)
                self.check("step %d (%s)" % (self.step, cls))
                print("soak: step %d/%d %s guest %d ok (%.0f s)" % (
                    self.step, self.args.faults, cls, gid, time.monotonic() - t0), flush=True)
            n = self.final_check()
        except Broken as e:
            print("soak: BROKEN at seed %d step %d: %s" % (self.args.seed, self.step, e),
                  flush=True)
            self.nf("down", "--name", self.name, check=False, timeout=120)
            print("soak: files kept in %s" % self.work)
            return 1
        print("soak: tally (class: expected / classified as expected)")
        for c in CLASSES:
            print("  %-9s %4d / %d" % (c, self.tally[c][0], self.tally[c][1]))
        print("soak: %d faults, %d overlays checked, supervisor fds %d..%d, RSS %d..%d KiB, "
              "%d console lines typed again, %.0f s, seed %d: ok" % (
                  self.args.faults, n, self.base_fds, self.max_fds, self.base_rss, self.max_rss,
                  self.retyped, time.monotonic() - t0, self.args.seed))
        shutil.rmtree(self.work, ignore_errors=True)
        return 0


def qemu_pids(run_dir):
    """Processes whose command line names this fleet's runtime dir (its qemus)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if run_dir in cmd and "qemu" in cmd.split("\0")[0]:
            try:
                with open("/proc/%s/stat" % d) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            out.append(int(d))
    return sorted(out)


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def last_boot_count(vm_dir):
    n = None
    for log in ("console.log.1", "console.log"):
        try:
            with open(os.path.join(vm_dir, log), errors="replace") as f:
                for m in re.finditer(r"nervesfleet-data boots=(\d+)", f.read()):
                    n = int(m.group(1))
        except OSError:
            pass
    return n


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise Broken("pid %d still there %d s after kill -9" % (pid, timeout))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", type=int, default=int(os.environ.get("N", "8")))
    ap.add_argument("--faults", type=int, default=int(os.environ.get("FAULTS", "200")))
    ap.add_argument("--work", help="where the run's temp dir goes (default: $TMPDIR)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED", str(int(time.time())))))
    sys.exit(Soak(ap.parse_args()).main())
