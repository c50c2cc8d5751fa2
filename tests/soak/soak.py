#!/usr/bin/env python3
"""tests/soak/soak.py: a seeded random schedule of faults against a fleet of
real sim guests with disks, checking the supervisor's promises as it goes.

Faults: kill -9 of qemu, SIGSTOP long enough to be called hung, SIGSTOP/
SIGCONT shorter than the health deadline, a kernel panic, poweroff and
watchdog starvation typed on the console, reflash, balloon changes and
control clients that disconnect mid-stream, each on one guest; scale up and
back down, and kill -9 of the daemon supervisor followed by a new `run -d`
(adoption), on the whole fleet.

Pipelined, so 1,000 faults fit in well under an hour: a guest fault is
applied and the next one goes to another guest while the first recovers, up
to --inflight guests at once; each pending guest is followed until it is
back, against its own deadline. A scale-up is followed the same way (until
its new guests are ready, then it is shrunk back); kill -9 of the supervisor
waits until no guest is pending. Invariants:
  - each fault is classified as what it was (status.json last_exit), tallied
    per class, expected vs seen; a fault that must not end the guest (pause,
    balloon, client) leaves no exit within the health deadline;
  - each faulted guest is ready again (new pid) within its own bound: the
    time its fault takes to be detected (hang: health interval + timeout +
    stop timeout; watchdog: the timer twice + a probe), plus the backoff cap
    with its jitter, plus a boot under load (SOAK_LOAD x the fleet's slowest
    first boot, times the boots queued ahead of it), plus SOAK_SLACK s; or
    `failed` by policy; while the memory guard holds restarts back (host
    near OOM, its notices in supervisor.log) the deadlines stand still;
  - on every poll: no qemu of this fleet that `ps --json` does not name, the
    fleet's size, the supervisor's fds and RSS under a bound;
  - on each recovery and whenever the fleet is quiet: status.json agrees with
    `ps --json` (state, pid), and the guest's /data boot counter (console:
    "nervesfleet-data boots=N") never goes backwards, except by reflash;
  - at the end: no process, socket, pid file or cgroup left, and every
    overlay passes `qemu-img check`.
Any break stops the run, printing the seed and the step (the classes and
their order follow from the seed; which guest each hits also depends on
which are ready at that moment). Exits of guests no fault touched (a health
probe missed under host load) are counted and listed, not a break.

  tests/soak/soak.py [--guests N] [--faults F] [--seed S] [--inflight K]
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
# A first boot slower than this is a break of its own (a loaded 2-core box).
BOOT_BOUND = float(os.environ.get("SOAK_BOOT_BOUND", "240"))
LOAD = float(os.environ.get("SOAK_LOAD", "3"))     # boots under load, vs the first
SLACK = float(os.environ.get("SOAK_SLACK", "20"))  # s: CLI round trips, scheduling
CLASSES = ["kill9", "hang", "pause", "panic", "poweroff", "watchdog", "scale", "reflash",
           "balloon", "supkill", "client"]
WEIGHTS = [4, 2, 2, 2, 2, 1, 1, 1, 2, 1, 2]
QUIET = ("supkill",)  # faults that wait for a quiet fleet
# What status.json's last_exit must say after each fault; None: no exit at all.
EXPECT = {"kill9": "crashed", "hang": "hung", "pause": None, "panic": "panic",
          "poweroff": "poweroff", "watchdog": "watchdog", "reflash": "stopped",
          "balloon": None, "client": None}
# The fleet's policy (run_args), which the bounds are computed from.
BACKOFF, BACKOFF_MAX, JITTER = 0.5, 4.0, 0.2
HEALTH_INTERVAL, HEALTH_TIMEOUT, STOP_TIMEOUT, WDT = 2, 6, 5, 6
BATCH = 2


class Broken(Exception):
    pass


class Pending:
    """A faulted guest followed until it is back (or shown untouched)."""

    def __init__(self, step, cls, gid, pid, at, bound):
        self.step, self.cls, self.gid, self.pid, self.at = step, cls, gid, pid, at
        self.t0 = time.monotonic()
        self.bound = bound
        self.deadline = self.t0 + bound
        self.seen = None  # the exit kind once recorded


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
        self.inflight = args.inflight or max(1, self.count // 5)
        self.step = 0
        self.retyped = 0  # console lines the guest's shell swallowed, typed again
        self.tally = {c: [0, 0] for c in CLASSES}  # class -> [expected, seen as expected]
        self.failed_by_policy = 0
        self.boots = {}  # guest id -> last boot count seen
        self.last_at = {}  # guest id -> last_exit_at_us known
        self.spontaneous = []  # (step, guest, kind, reason) of exits no fault caused
        self.pending = {}  # guest id -> Pending
        self.worst = (0.0, None)  # largest recovery time / its bound, and what
        self.boot_unit = None
        self.base_fds = self.base_rss = None
        self.max_fds = self.max_rss = 0
        self.samples = []  # (s, fds, rss KiB), about one a minute
        # The memory guard holds restarts back while the host nears OOM (its
        # notices in supervisor.log): deadlines stand still meanwhile.
        self.log_at = 0
        self.admission_paused = False
        self.paused_s = 0.0
        self.last_poll = None
        # SIGTERM: no new fault; the pending ones finish, then the end checks
        # and the tally as usual (a run cut short by a deadline still counts).
        self.stop_asked = False
        signal.signal(signal.SIGTERM, self.stop_cb)
        self.t0 = time.monotonic()
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
                "--restart", "always", "--backoff", str(BACKOFF), "--backoff-max",
                str(BACKOFF_MAX), "--max-restarts", "1000", "--restart-window", "5",
                "--health-interval", str(HEALTH_INTERVAL), "--health-timeout",
                str(HEALTH_TIMEOUT), "--heartbeat-timeout", "0", "--stop-timeout",
                str(STOP_TIMEOUT), "--boot-timeout", str(int(BOOT_BOUND)), "--batch", str(BATCH),
                "--append", "nf.wdt_timeout=%d" % WDT]

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

    # --- bounds ----------------------------------------------------------------
    def bound(self, cls):
        """Seconds guest may take to be back after a fault of class cls,
        from its own policy (see the module's comment)."""
        detect = {"hang": HEALTH_INTERVAL + HEALTH_TIMEOUT + STOP_TIMEOUT,
                  "watchdog": 2 * WDT + HEALTH_INTERVAL}.get(cls, 0)
        if EXPECT.get(cls, "x") is None:
            # Nothing to recover from: watched for as long as a wrong
            # verdict (hung) would take to show.
            return HEALTH_INTERVAL + HEALTH_TIMEOUT + STOP_TIMEOUT + 2
        queued = 1 + len(self.pending) // BATCH  # boots ahead of it in the window
        return detect + BACKOFF_MAX * (1 + JITTER) + LOAD * self.boot_unit * queued + SLACK

    # --- faults ----------------------------------------------------------------
    def guest_fault(self, cls, gs):
        """Applies cls to a ready guest no fault is pending on; its Pending,
        or None when every guest is busy."""
        ready = sorted(i for i, g in gs.items() if g["state"] == "ready" and
                       i not in self.pending and i <= self.count)
        if not ready:
            return None
        gid = self.rng.choice(ready)
        pid = gs[gid]["pid"]
        at = self.status(gid).get("last_exit_at_us", 0)
        if at != self.last_at.get(gid, at):
            self.spontaneous_exit(gid)
        if cls == "kill9":
            os.kill(pid, signal.SIGKILL)
        elif cls == "hang":
            os.kill(pid, signal.SIGSTOP)
        elif cls == "pause":
            os.kill(pid, signal.SIGSTOP)
            time.sleep(1)  # the fault itself: a pause shorter than the health deadline
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
        elif cls == "reflash":
            self.nf("reflash", str(gid))
        return Pending(self.step, cls, gid, pid, at, self.bound(cls))

    def scale_up(self):
        """Grows the fleet by one or two guests; followed (as guest 0) until
        they are ready, then shrunk back (poll)."""
        up = self.count + self.rng.randint(1, 2)
        self.nf("scale", str(up))
        p = Pending(self.step, "scale", 0, None, None, 0)
        p.up = up
        p.bound = LOAD * self.boot_unit * (1 + (len(self.pending) + up - self.count) // BATCH) + \
            SLACK
        p.deadline = p.t0 + p.bound
        return p

    def scale_progress(self, p, gs, now):
        new = [gs.get(i, {}).get("state") for i in range(self.count + 1, p.up + 1)]
        if all(st == "ready" for st in new):
            self.nf("scale", str(self.count))  # returns once they are down
            for i in range(self.count + 1, p.up + 1):
                self.boots.pop(i, None)
            del self.pending[0]
            self.tally["scale"][0] += 1
            self.tally["scale"][1] += 1
            took = now - p.t0
            if took / p.bound > self.worst[0]:
                self.worst = (took / p.bound, "scale to %d: %.1f s of %.0f" % (p.up, took, p.bound))
        elif now > p.deadline:
            raise Broken("scale (step %d) to %d: new guests not ready within %.0f s: %s" % (
                p.step, p.up, p.bound, new))

    def fleet_fault(self, cls):
        """supkill, on a quiet fleet (nothing pending)."""
        gs = self.guests()
        if cls == "supkill":
            sup = self.supervisor_pid()
            os.kill(sup, signal.SIGKILL)
            wait_gone(sup)
            self.admission_paused = False
            self.nf(*self.run_args())
            after = self.wait_all_ready("after re-adoption")
            moved = {i: (gs[i]["pid"], after[i]["pid"]) for i in gs
                     if gs[i]["state"] == "ready" and i in after and after[i]["pid"] != gs[i]["pid"]}
            if moved:
                raise Broken("re-adoption restarted guests (old, new pid): %s" % moved)
        self.tally[cls][0] += 1
        self.tally[cls][1] += 1

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

    def spontaneous_exit(self, gid):
        st = self.status(gid)
        self.spontaneous.append((self.step, gid, st.get("last_exit"), st.get("last_exit_reason")))
        print("soak: step %d: guest %d exited with no fault on it: %s (%s)" % (
            self.step, gid, st.get("last_exit"), st.get("last_exit_reason")), flush=True)
        self.last_at[gid] = st.get("last_exit_at_us", 0)

    # --- invariants --------------------------------------------------------------
    def poll(self):
        """One look at the fleet: instant invariants, then every pending
        guest's progress against its deadline."""
        ps1 = self.guests()
        running = set(qemu_pids(self.run_dir))
        gs = self.guests()
        named = {g["pid"] for g in list(ps1.values()) + list(gs.values()) if g["pid"]}
        if running - named:
            raise Broken("qemu processes %s that ps --json does not name (it names %s)" % (
                sorted(running - named), sorted(named)))
        size = self.pending[0].up if 0 in self.pending else self.count
        if len(gs) != size:
            raise Broken("ps --json shows %d guests, the fleet has %d" % (len(gs), size))
        self.check_supervisor("poll", gs)
        now = time.monotonic()
        self.follow_admission(now)
        for gid, p in sorted(self.pending.items()):
            if gid == 0:
                self.scale_progress(p, gs, now)
                continue
            st = self.status(gid)
            g = gs[gid]
            exp = EXPECT[p.cls]
            if st.get("last_exit_at_us", 0) != p.at and p.seen is None:
                p.seen = st.get("last_exit")
                if exp is None or p.seen != exp:
                    raise Broken("%s (step %d) on guest %d classified %r, expected %r (reason: %s)"
                                 % (p.cls, p.step, gid, p.seen, exp, st.get("last_exit_reason")))
            if exp is None:
                done = now >= p.deadline and g["state"] == "ready" and g["pid"] == p.pid
            else:
                done = p.seen is not None and g["state"] in ("ready", "failed") and \
                    g["pid"] != p.pid
            if done:
                self.resolve(p, g, st, now)
            elif now > p.deadline + (0 if exp is not None else SLACK):
                raise Broken("%s (step %d) on guest %d: not back within its bound of %.0f s "
                             "(exit seen: %r, now %s pid %s)" % (
                                 p.cls, p.step, gid, p.bound, p.seen, g["state"], g["pid"]))
        for gid, g in gs.items():
            if gid not in self.pending and gid <= self.count:
                self.quiet_guest_check(gid, g)
        if not self.samples or now - self.t0 - self.samples[-1][0] >= 60:
            self.samples.append((now - self.t0, self.cur_fds, self.cur_rss))
        return gs

    def follow_admission(self, now):
        """Reads the supervisor's new log lines for the memory guard's
        admission notices; while paused, every pending deadline moves on
        with the clock (held by policy, not late)."""
        log = os.path.join(self.state_dir, "supervisor.log")
        try:
            with open(log, errors="replace") as f:
                f.seek(self.log_at)
                text = f.read()
                self.log_at = f.tell()
        except OSError:
            text = ""
        held = self.admission_paused
        for m in re.finditer(r"admission (paused|resumed)", text):
            self.admission_paused = m.group(1) == "paused"
            held = held or self.admission_paused
        if held and self.last_poll is not None:
            dt = now - self.last_poll
            self.paused_s += dt
            for p in self.pending.values():
                p.deadline += dt
        self.last_poll = now

    def resolve(self, p, g, st, now):
        del self.pending[p.gid]
        if g["state"] == "failed":
            self.failed_by_policy += 1
        took = now - p.t0
        if EXPECT[p.cls] is not None and took / p.bound > self.worst[0]:
            self.worst = (took / p.bound, "%s on guest %d: %.1f s of %.0f" % (
                p.cls, p.gid, took, p.bound))
        self.tally[p.cls][0] += 1
        self.tally[p.cls][1] += 1
        self.last_at[p.gid] = st.get("last_exit_at_us", 0)
        if p.cls == "reflash":
            self.boots[p.gid] = 0
        self.guest_check(p.gid, g, "%s (step %d)" % (p.cls, p.step))

    def quiet_guest_check(self, gid, g):
        st = self.status(gid)
        if st.get("last_exit_at_us", 0) != self.last_at.setdefault(gid, st.get("last_exit_at_us", 0)):
            self.spontaneous_exit(gid)

    def guest_check(self, gid, g, what):
        st = self.status(gid)
        if (st["state"], st["pid"]) != (g["state"], g["pid"]):
            # A transition between the two reads: look again once.
            g = self.guests()[gid]
            st = self.status(gid)
            if (st["state"], st["pid"]) != (g["state"], g["pid"]):
                raise Broken("%s: guest %d status.json says %s pid %s, ps --json %s pid %s" % (
                    what, gid, st["state"], st["pid"], g["state"], g["pid"]))
        n = last_boot_count(os.path.join(self.state_dir, "vm-%04d" % gid))
        if n is not None:
            if n < self.boots.get(gid, 0):
                raise Broken("%s: guest %d boot counter went back from %d to %d" % (
                    what, gid, self.boots[gid], n))
            self.boots[gid] = n

    def check_supervisor(self, what, gs):
        """Supervisor fds and RSS against bounds drawn from the fleet's state.

        A ready guest holds 1 fd of the supervisor (its QMP socket), 2 when
        it was adopted (a pidfd too: it is not our child); one that boots,
        stops or is watched holds up to 3 (QMP, console, pidfd); a guest that
        is down holds none. So the bound is the first quiet fleet's fds
        without its guests' share (all spawned, 1 each), plus each guest's
        largest share now, plus control clients in flight. A leak of one fd
        per fault passes it within a few dozen faults."""
        sup = self.supervisor_pid()
        fds = len(os.listdir("/proc/%d/fd" % sup))
        rss = proc_rss_kib(sup)
        ready = sum(1 for g in gs.values() if g["state"] == "ready")
        busy = sum(1 for g in gs.values() if g["state"] != "ready" and g["running"])
        if self.base_fds is None:
            self.base_fds, self.base_rss = fds, rss
            self.base_fixed = fds - ready - 3 * busy
        self.cur_fds, self.cur_rss = fds, rss
        self.max_fds, self.max_rss = max(self.max_fds, fds), max(self.max_rss, rss)
        bound = self.base_fixed + 2 * ready + 3 * busy + 16
        if fds > bound:
            targets = {}
            for fd in os.listdir("/proc/%d/fd" % sup):
                try:
                    t = os.readlink("/proc/%d/fd/%s" % (sup, fd)).split(":")[0]
                except OSError:
                    continue
                targets[t] = targets.get(t, 0) + 1
            raise Broken("%s: supervisor fds grew from %d to %d (bound %d for %d ready and %d "
                         "busy guests; by kind: %s)" % (what, self.base_fds, fds, bound, ready,
                                                        busy, targets))
        # RSS twice the first plus 64 MiB (sanitizer builds grow).
        if rss > 2 * self.base_rss + 65536:
            raise Broken("%s: supervisor RSS grew from %d to %d KiB" % (what, self.base_rss, rss))

    def full_check(self, what):
        """The quiet fleet: every guest ready (or failed), every invariant."""
        gs = self.wait_all_ready(what)
        named = {g["pid"] for g in gs.values() if g["pid"]}
        running = set(qemu_pids(self.run_dir))
        if running != named:
            raise Broken("%s: qemu processes %s, ps --json names %s" % (what, sorted(running),
                                                                      sorted(named)))
        for i, g in gs.items():
            self.quiet_guest_check(i, g)
            self.guest_check(i, g, what)
        self.check_supervisor(what, gs)

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
    def schedule(self):
        """The classes in order: each at least once (seeded order), then at
        random by weight."""
        first = list(CLASSES)
        self.rng.shuffle(first)
        rest = self.rng.choices(CLASSES, WEIGHTS, k=max(0, self.args.faults - len(first)))
        return (first + rest)[:self.args.faults]

    def main(self):
        subprocess.run(["mkfs.ext4", "-q", "-F", os.path.join(self.work, "data.img"), "16M"],
                       check=True, capture_output=True)
        print("soak: %d guests, %d faults, up to %d guests in flight, seed %d, in %s" % (
            self.count, self.args.faults, self.inflight, self.args.seed, self.work), flush=True)
        self.nf(*self.run_args())
        try:
            self.full_check("first boot")
            self.boot_unit = max(5.0, max(g["boot_s"] or 0 for g in self.guests().values()))
            print("soak: first boot done (%.0f s); slowest boot %.1f s: bounds from it" % (
                time.monotonic() - self.t0, self.boot_unit), flush=True)
            todo = self.schedule()
            while (todo and not self.stop_asked) or self.pending:
                gs = self.poll()
                if todo and todo[0] in QUIET:
                    if self.pending:
                        time.sleep(0.5)
                        continue
                    self.full_check("before step %d" % (self.step + 1))
                    self.step += 1
                    cls = todo.pop(0)
                    self.fleet_fault(cls)
                    self.full_check("step %d (%s)" % (self.step, cls))
                    self.say(cls, None)
                elif todo and todo[0] == "scale" and 0 in self.pending:
                    time.sleep(0.5)  # one scale at a time
                elif todo and len(self.pending) < self.inflight:
                    self.step += 1
                    p = self.scale_up() if todo[0] == "scale" else self.guest_fault(todo[0], gs)
                    if p is None:
                        self.step -= 1
                        time.sleep(0.5)
                        continue
                    todo.pop(0)
                    self.pending[p.gid] = p
                    self.say(p.cls, p.gid or None)
                else:
                    time.sleep(0.5)
            self.full_check("the end")
            n = self.final_check()
        except Broken as e:
            print("soak: BROKEN at seed %d step %d: %s" % (self.args.seed, self.step, e),
                  flush=True)
            self.nf("down", "--name", self.name, check=False, timeout=120)
            print("soak: files kept in %s" % self.work)
            return 1
        self.report(n)
        shutil.rmtree(self.work, ignore_errors=True)
        if self.stop_asked:
            print("soak: stopped early (SIGTERM) after %d of %d faults" % (
                self.step, self.args.faults))
        return 0

    def stop_cb(self, signum, frame):
        self.stop_asked = True

    def say(self, cls, gid):
        print("soak: step %d/%d %s%s (%d pending, %.0f s)" % (
            self.step, self.args.faults, cls, "" if gid is None else " guest %d" % gid,
            len(self.pending), time.monotonic() - self.t0), flush=True)

    def report(self, n):
        print("soak: tally (class, faults, expected exit, classified as expected)")
        for c in CLASSES:
            exp = EXPECT.get(c, "-")
            print("  %-9s %5d  %-9s %5d" % (c, self.tally[c][0], exp or "none",
                                             self.tally[c][1]))
        print("soak: supervisor fds / RSS KiB over time: %s" % ", ".join(
            "%.0fs %d/%d" % s for s in self.samples))
        print("soak: restarts held back by the memory guard (host memory pressure) for %.0f s "
              "in all" % self.paused_s)
        print("soak: slowest recovery against its bound: %.2f (%s); %d failed by policy; "
              "%d exits with no fault on the guest%s" % (
                  self.worst[0], self.worst[1], self.failed_by_policy, len(self.spontaneous),
                  (": " + "; ".join("step %d guest %d %s" % s[:3] for s in self.spontaneous))
                  if self.spontaneous else ""))
        print("soak: %d faults, %d overlays checked, supervisor fds %d..%d, RSS %d..%d KiB, "
              "%d console lines typed again, %.0f s, seed %d: ok" % (
                  self.step, n, self.base_fds, self.max_fds, self.base_rss, self.max_rss,
                  self.retyped, time.monotonic() - self.t0, self.args.seed))


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
    ap.add_argument("--inflight", type=int, default=0,
                    help="guests recovering from a fault at once (default: a fifth of the fleet)")
    sys.exit(Soak(ap.parse_args()).main())
