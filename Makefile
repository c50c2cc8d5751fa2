# nervesfleet build. One binary; every module's objects also go into a static
# library that the tests link against. Two build flavours share the sources:
#   build/rel   optimised, what `make all` / `make install` ship
#   build/asan  ASan+UBSan, what `make check` runs
# New source files in a module folder, and new tests/test-*.c, are picked up
# without editing this file.

PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
PKGS      = glib-2.0 gio-2.0 gio-unix-2.0 jansson libsoup-3.0 libsystemd
# Read when a compile or link first needs them, not when this file is parsed:
# `make demo` / `make check` install the packages first (scripts/install-deps.sh)
# and only then build in a sub-make, so a fresh machine works the first time.
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(call pkg_config,--cflags,$(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(call pkg_config,--libs,$(PKGS)))$(PKG_LIBS)
# The binary itself links only what every verb needs: libsoup (`run --http`)
# and libsystemd (under systemd) are opened when first used (http/soup-load.h,
# cli/notify.h), so `ps`, `console`... do not pay for loading them. Tests and
# benchmarks link everything (some are libsoup clients).
BIN_PKGS   = glib-2.0 gio-2.0 gio-unix-2.0 jansson
BIN_LIBS   = $(eval BIN_LIBS := $$(call pkg_config,--libs,$(BIN_PKGS)))$(BIN_LIBS)
pkg_config = $(or $(shell pkg-config $(1) $(2) 2>/dev/null),\
  $(error pkg-config finds no $(2): install the dependencies first with `make deps`))
WARN      = -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
            -Wmissing-prototypes -Wstrict-prototypes
CPPFLAGS += -I. -D_GNU_SOURCE -DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_74 \
            -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_74
REL_CFLAGS  = -O2 -g $(WARN)
ASAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined $(WARN)

MODULES  = qmp overlay supervisor http cli
# The page's files (http/static/) become a C array in a generated source.
STATIC_FILES = $(sort $(wildcard http/static/*))
GEN_SRCS = build/gen/http/static-files.c
LIB_SRCS = $(filter-out cli/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c))) $(GEN_SRCS)
HDRS     = $(foreach m,$(MODULES),$(wildcard $(m)/*.h)) $(wildcard tests/lib/*.h)
TESTLIB_SRCS = $(wildcard tests/lib/*.c)
TEST_SRCS    = $(wildcard tests/test-*.c)
TEST_HELPERS = $(wildcard tests/helpers/*.c)
FUZZ_SRCS    = $(wildcard tests/fuzz/fuzz-*.c)
BENCH_SRCS   = $(wildcard bench/*.c)

# Where the default guest lives; the binary looks in the same place.
# GUEST_KERNEL=small: the guest with the small kernel compiled from Debian's
# linux-source (guest/build-kernel.sh, ~390 CPU-s: ~4 min on 2 idle cores, once), in its own
# dir; demo, check, soak and bench then use it (see guest/README.md "Small kernel").
NF_CACHE     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/nervesfleet
GUEST_KERNEL ?= debian
GUEST_DIR    ?= $(NF_CACHE)/$(if $(filter small,$(GUEST_KERNEL)),guest-small,guest)
DEPS_ARGS     = $(if $(filter small,$(GUEST_KERNEL)),--small-kernel)
JOBS      ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 2 ? 2 : n )))

.PHONY: all deps guest demo check check-web unit check-build fuzz fuzz-build soak bench clean install uninstall \
        format format-check

all: nervesfleet

# --- objects -----------------------------------------------------------------
build/rel/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

build/asan/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# Generated sources (build/gen/...) compile through the rules above.
build/gen/http/static-files.c: $(STATIC_FILES) scripts/embed-files.sh
	@mkdir -p $(@D)
	scripts/embed-files.sh $(STATIC_FILES) > $@.tmp && mv $@.tmp $@

build/rel/libnf.a: $(patsubst %.c,build/rel/%.o,$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

build/asan/libnf.a: $(patsubst %.c,build/asan/%.o,$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

nervesfleet: build/rel/cli/main.o build/rel/libnf.a
	$(CC) $(REL_CFLAGS) -o $@ $^ $(BIN_LIBS)

build/asan/nervesfleet: build/asan/cli/main.o build/asan/libnf.a
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(BIN_LIBS)

# --- tests -------------------------------------------------------------------
TEST_BINS   = $(patsubst tests/%.c,build/asan/tests/%,$(TEST_SRCS))
HELPER_BINS = $(patsubst tests/helpers/%.c,build/asan/tests/helpers/%,$(TEST_HELPERS))
TESTLIB_OBJS = $(patsubst %.c,build/asan/%.o,$(TESTLIB_SRCS))

build/asan/tests/test-%: build/asan/tests/test-%.o $(TESTLIB_OBJS) build/asan/libnf.a
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS)

build/asan/tests/helpers/%: build/asan/tests/helpers/%.o build/asan/libnf.a
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS)

# The fake qemu runs by the thousand (fleet tests, bench): built without
# sanitizers and against jansson only, a few hundred KiB per process instead
# of tens of MiB. Tests find it with the other helpers; bench at its rel path.
FAKE_QEMU_REL = build/rel/tests/helpers/fake-qemu
$(FAKE_QEMU_REL): tests/helpers/fake-qemu.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) $(shell pkg-config --cflags jansson) -o $@ $< \
	  $(shell pkg-config --libs jansson)

build/asan/tests/helpers/fake-qemu: $(FAKE_QEMU_REL)
	@mkdir -p $(@D)
	cp $< $@

check-build: build/asan/nervesfleet $(TEST_BINS) $(HELPER_BINS)

# The environment every test sees: where the binary and the guest are, and
# sanitizer settings (GLib keeps a few process-lifetime allocations: tests/lsan.supp).
TEST_ENV = NF_BIN=$(CURDIR)/build/asan/nervesfleet NF_GUEST_DIR=$(GUEST_DIR) \
           NF_SMALL_GUEST_DIR=$(NF_CACHE)/guest-small \
           NF_SRCDIR=$(CURDIR) NF_HELPERS=$(CURDIR)/build/asan/tests/helpers \
           ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
           G_DEBUG=fatal-criticals

# Installs what is missing first (a no-op when all is there), then builds in a
# sub-make that sees the installed libraries. Each program runs through
# tests/run-test, so one that fails does not stop the others mid-test.
check:
	scripts/install-deps.sh $(DEPS_ARGS)
	$(MAKE) check-build guest
	$(TEST_ENV) prove --exec ./tests/run-test -j $(JOBS) --timer $(if $(T),$(patsubst %,build/asan/tests/%,$(T)),$(TEST_BINS))

# The dashboard in a real headless Chromium (tests/web/): its own target, as
# it needs a browser that `make check` does not (install-deps.sh --web).
check-web:
	scripts/install-deps.sh --web
	$(MAKE) all guest
	NF_BIN=$(CURDIR)/nervesfleet NF_GUEST_DIR=$(GUEST_DIR) NF_SRCDIR=$(CURDIR) \
	  python3 tests/web/test-dashboard.py

# Unit tests only (no qemu): quick inner loop.
unit: check-build
	$(TEST_ENV) prove --exec ./tests/run-test -j $(JOBS) $(filter %-unit,$(TEST_BINS))

# --- fuzzing (clang/libFuzzer; not part of check) -----------------------------
# Every library source is built again by clang with coverage for libFuzzer
# (fuzzer-no-link) into build/fuzz/libnf.a; each tests/fuzz/fuzz-NAME.c
# links against it. Seeds: tests/fuzz/corpus-NAME/; what a run learns goes
# to build/fuzz/corpus-NAME/. `make fuzz FUZZ_TIME=S` runs each target S
# seconds (FUZZ_SECONDS is the older name), `FUZZ=NAME` only that one.
FUZZ_CFLAGS  = -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
FUZZ_BINS    = $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 60
FUZZ_TIME    ?= $(FUZZ_SECONDS)
FUZZ_NICE    ?= nice -n 10
FUZZ         ?= $(patsubst tests/fuzz/fuzz-%.c,%,$(FUZZ_SRCS))

build/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

build/fuzz/libnf.a: $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz-%: tests/fuzz/fuzz-%.c build/fuzz/libnf.a
	@mkdir -p $(@D)
	clang $(CPPFLAGS) -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined \
	  $(PKG_CFLAGS) -o $@ $< build/fuzz/libnf.a $(PKG_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@for n in $(FUZZ); do \
	  mkdir -p build/fuzz/corpus-$$n; \
	  echo "fuzz: $$n for $(FUZZ_TIME)s"; \
	  $(FUZZ_NICE) build/fuzz/fuzz-$$n -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=10 \
	    -print_final_stats=1 build/fuzz/corpus-$$n tests/fuzz/corpus-$$n || exit 1; \
	done

# --- soak (not part of check: tests/test-soak.c runs a short one) ----------------
# Real sim guests with disks and a seeded random schedule of faults, several
# guests recovering at once (INFLIGHT, default a fifth of N); invariants
# checked as it goes (tests/soak/soak.py). A break prints the seed and the
# step: `make soak SEED=S` replays it. It runs a copy of the binary, so a
# rebuild during the hour does not change it under the run.
N        ?= 20
FAULTS   ?= 1000
INFLIGHT ?= 0
SEED     ?= $(shell date +%s)
soak: all guest
	@mkdir -p build/soak
	cp nervesfleet build/soak/nervesfleet
	NF_BIN=$(CURDIR)/build/soak/nervesfleet NF_GUEST_DIR=$(GUEST_DIR) \
	  python3 tests/soak/soak.py --guests $(N) --faults $(FAULTS) --inflight $(INFLIGHT) \
	    --seed $(SEED)

# --- guest, demo, bench ------------------------------------------------------
deps:
	scripts/install-deps.sh $(DEPS_ARGS)

guest:
	guest/build-guest.sh --kernel $(GUEST_KERNEL) "$(GUEST_DIR)"

# The README's first command. DEMO_ARGS lets CI take the very same path
# without a terminal (`make demo DEMO_ARGS='--exec true'`).
DEMO_ARGS ?=
demo:
	scripts/install-deps.sh $(DEPS_ARGS)
	$(MAKE) all guest
	NERVESFLEET_GUEST_DIR=$(GUEST_DIR) ./nervesfleet run 4 $(DEMO_ARGS)

BENCH_BINS = $(patsubst bench/%.c,build/rel/bench/%,$(BENCH_SRCS))
build/rel/bench/%: build/rel/bench/%.o build/rel/libnf.a
	$(CC) $(REL_CFLAGS) -o $@ $^ $(PKG_LIBS)

bench: all guest $(BENCH_BINS) $(FAKE_QEMU_REL)
	NF_BIN=$(CURDIR)/nervesfleet NF_GUEST_DIR=$(GUEST_DIR) BENCH_BIN_DIR=$(CURDIR)/build/rel/bench \
	  FAKE_QEMU=$(CURDIR)/$(FAKE_QEMU_REL) bench/run.sh $(BENCH)

# --- housekeeping -------------------------------------------------------------
# The systemd template unit (its ExecStart names the installed binary), the
# man page and bash completion go where systemd, man and bash-completion
# look for them under PREFIX.
UNITDIR       ?= $(PREFIX)/lib/systemd/system
MANDIR        ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
install: nervesfleet
	install -D -m 0755 nervesfleet $(DESTDIR)$(PREFIX)/bin/nervesfleet
	install -D -m 0755 guest/build-guest.sh $(DESTDIR)$(PREFIX)/share/nervesfleet/build-guest.sh
	install -D -m 0644 guest/init $(DESTDIR)$(PREFIX)/share/nervesfleet/init
	install -D -m 0755 guest/build-kernel.sh $(DESTDIR)$(PREFIX)/share/nervesfleet/build-kernel.sh
	install -D -m 0644 guest/kernel.config $(DESTDIR)$(PREFIX)/share/nervesfleet/kernel.config
	@mkdir -p $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(PREFIX)/bin|g' systemd/nervesfleet@.service > $(DESTDIR)$(UNITDIR)/nervesfleet@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nervesfleet@.service
	install -D -m 0644 man/nervesfleet.1 $(DESTDIR)$(MANDIR)/man1/nervesfleet.1
	install -D -m 0644 scripts/nervesfleet.bash-completion $(DESTDIR)$(COMPLETIONDIR)/nervesfleet

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/nervesfleet $(DESTDIR)$(PREFIX)/share/nervesfleet/build-guest.sh \
	  $(DESTDIR)$(PREFIX)/share/nervesfleet/init $(DESTDIR)$(PREFIX)/share/nervesfleet/build-kernel.sh \
	  $(DESTDIR)$(PREFIX)/share/nervesfleet/kernel.config $(DESTDIR)$(UNITDIR)/nervesfleet@.service \
	  $(DESTDIR)$(MANDIR)/man1/nervesfleet.1 $(DESTDIR)$(COMPLETIONDIR)/nervesfleet

FORMAT_SRCS = $(foreach m,$(MODULES),$(wildcard $(m)/*.[ch])) \
  $(wildcard tests/*.c tests/lib/*.[ch] tests/helpers/*.c tests/fuzz/*.c bench/*.c)
format:
	clang-format -i $(FORMAT_SRCS)

# CI: fails when a file is not in the checked-in style (`make format` fixes it).
format-check:
	clang-format --dry-run -Werror $(FORMAT_SRCS)

clean:
	rm -rf build nervesfleet

.SECONDARY:
