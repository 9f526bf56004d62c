# shmbus - one plain Makefile.
#   make            libshmbus.a, libshmbus.so.0, shmbus.pc, shmbusd, busstat,
#                   shmbusctl, the systemd unit, examples
#   make test       the Criterion suite and the C++ check of the headers
#   make sanitize   the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan       the suite under ThreadSanitizer
#   make bench      the benchmarks (bench-quick: briefly; bench-insn: callgrind)
#   make demo       shmbusd on examples/demo.conf, a publisher and a subscriber
#   make deps       install what the build, the suite and the benchmarks need
#                   (apt-get, as root)
#   make install    PREFIX=/usr/local, DESTDIR, and the directories below
#   make uninstall  removes what make install put there (same variables)
# V=1 shows full commands.  BUILD=dir puts objects elsewhere.
#
# `make`, `make all` and `make install` need only the build dependencies
# (BUILD_PKGS below) and never install anything.  test, sanitize, tsan,
# bench, demo and deps check the packages they need and, run as root,
# install what is missing (otherwise they name it).  CPPFLAGS, CFLAGS and
# LDFLAGS from the environment or the command line are used (Debian's
# dpkg-buildflags); the project's own -Iinclude is always added.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BUILD   ?= build
CC      ?= gcc
CXX     ?= g++
AR      ?= ar
OBJCOPY ?= objcopy
INSTALL ?= install
PKG_CONFIG ?= pkg-config
SAN     ?=

WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
INCLUDES = -Iinclude
ALLCPPFLAGS = $(INCLUDES) $(CPPFLAGS)
CFLAGS  ?= -O2 -g
# Consumer groups CAS 16 bytes at once (cmpxchg16b, every x86-64 since 2008).
ARCHFLAGS ?= -mcx16
ALLCFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SAN) -fPIC -fvisibility=hidden -MMD -MP \
	    $(ARCHFLAGS)
LDLIBS_LIB = -lnuma -lpthread -lisal
TEST_LIBS  = -lcriterion $(LDLIBS_LIB)

# The version, from include/shmbus.h's SHMBUS_VERSION_* (the one place).
VERSION := $(shell awk '$$2 ~ /^SHMBUS_VERSION_(MAJOR|MINOR|PATCH)$$/ \
	{ printf "%s%s", sep, $$3; sep = "." }' include/shmbus.h)

# shmbusd tells systemd when it serves (sd_notify; a no-op without systemd).
SYSTEMD_CFLAGS := $(shell $(PKG_CONFIG) --cflags libsystemd 2>/dev/null)
SYSTEMD_LIBS   := $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null || echo -lsystemd)

ifeq ($(V),1)
Q =
else
Q = @
endif

LIB_SRCS  = $(wildcard lib/*.c)
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/%.o)
TEST_SRCS = $(wildcard tests/test_*.c)
TEST_HELP = $(BUILD)/tests/helpers.o $(BUILD)/tests/common.o \
	    $(BUILD)/tests/daemon_fixture.o $(BUILD)/tests/repl_fixture.o
TEST_BINS = $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_BINS = $(BUILD)/benchmarks/bench_latency $(BUILD)/benchmarks/bench_throughput \
	     $(BUILD)/benchmarks/bench_handover $(BUILD)/benchmarks/bench_wakeup \
	     $(BUILD)/benchmarks/bench_repl $(BUILD)/benchmarks/bench_group \
	     $(BUILD)/benchmarks/bench_journal $(BUILD)/benchmarks/bench_failover
DAEMON_SRCS = $(wildcard daemon/*.c)
DAEMON_OBJS = $(DAEMON_SRCS:%.c=$(BUILD)/%.o)
SHMBUSD   = $(BUILD)/shmbusd
DAEMON_LIBS = -lurcu -lurcu-cds -linih $(LDLIBS_LIB) -lcrypto -lcurl -ljansson
# A tool is tools/NAME.c; tools/busstat_*.c are parts of busstat.
TOOL_SRCS = $(filter-out tools/busstat_%.c,$(wildcard tools/*.c))
TOOL_BINS = $(TOOL_SRCS:tools/%.c=$(BUILD)/tools/%)
EX_SRCS   = $(wildcard examples/*.c)
EX_BINS   = $(EX_SRCS:examples/%.c=$(BUILD)/examples/%)

SONAME  = libshmbus.so.0
SOREAL  = libshmbus.so.$(VERSION)
LIB_A   = $(BUILD)/libshmbus.a
LIB_INT = $(BUILD)/libshmbus-internal.a
LIB_SO  = $(BUILD)/$(SONAME)
HEADERS = include/shmbus.h include/shmbus/layout.h include/shmbus/protocol.h \
	  include/shmbus/static_assert.h
UNIT    = $(BUILD)/shmbusd@.service
MAN1    = docs/busstat.1
MAN3    = docs/shmbus.3
MAN8    = docs/shmbusd.8 docs/shmbusctl.8
# `man shmbus_publish`: a page per function of shmbus.h, each a link
# (.so) to shmbus(3).  ($(LPAREN): a bare one would end $(shell ...).)
LPAREN := (
MAN3_LINKS = $(shell sed -n 's/^[a-z].*[ *]\(shmbus_[a-z_]*\)$(LPAREN).*/\1/p' include/shmbus.h)
CXX_TEST = $(BUILD)/tests/cxx_headers

# Debian packages.  BUILD_PKGS is what `make` needs: the library libnuma,
# shmbusd liburcu, libinih, libsystemd, OpenSSL, ISA-L, libcurl and
# jansson (etcd's gateway), busstat ncurses.  DEV_PKGS is
# what the suite (Criterion, g++ for the headers' check, tmux for busstat
# -w, python3 for check-ordering and the JSON checks, etcd for the
# failover tests) and the benchmarks
# (ZeroMQ, gnuplot) add.
BUILD_PKGS = gcc make pkg-config libnuma-dev liburcu-dev libinih-dev \
	     libncurses-dev libsystemd-dev libssl-dev libisal-dev \
	     libcurl4-openssl-dev libjansson-dev
DEV_PKGS   = g++ libcriterion-dev libzmq3-dev gnuplot-nox tmux python3 \
	     iproute2 nftables etcd-server
BUILD_DEPS_STAMP = $(BUILD)/.build-deps-ok
DEPS_STAMP = $(BUILD)/.deps-ok

# The goals that may install packages (as root).  Their objects wait for
# the check (order-only), so that even `make -j test` on a fresh machine
# installs before it compiles; `make`, `all` and `install` never check.
ifneq ($(filter test sanitize tsan tsan-run bench bench-quick bench-insn deps,$(MAKECMDGOALS)),)
NEED_DEPS = $(DEPS_STAMP)
else ifneq ($(filter demo,$(MAKECMDGOALS)),)
NEED_DEPS = $(BUILD_DEPS_STAMP)
endif

# The goals CI runs build on every CPU (their objects wait for the package
# check above, so this is safe on a fresh machine); a -j on the command
# line still wins, and sub-makes share the top level's job slots.  The
# tests themselves run one binary after another, in the recipes.
ifeq ($(MAKELEVEL),0)
ifneq ($(filter test sanitize tsan tsan-run bench bench-quick fuzz fuzz-build,$(MAKECMDGOALS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
endif
endif

.SECONDARY:
.PHONY: check-version all test check-ordering sanitize tsan tsan-run bench bench-quick bench-insn demo deps soak-groups soak-repl \
	install uninstall clean FORCE

all: $(LIB_A) $(LIB_SO) $(BUILD)/shmbus.pc $(EX_BINS) $(TOOL_BINS) $(SHMBUSD) $(UNIT)

# Installs the packages $(1) that are missing when run as root; otherwise
# names them once and fails.
define install_pkgs
	$(Q)mkdir -p $(BUILD)
	$(Q)missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "  DEPS   installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
		else \
			echo "shmbus: missing packages:$$missing"; \
			echo "        install them with: sudo apt-get install$$missing"; exit 1; \
		fi; \
	fi; touch $@
endef

$(BUILD_DEPS_STAMP): Makefile
	$(call install_pkgs,$(BUILD_PKGS))

$(DEPS_STAMP): Makefile
	$(call install_pkgs,$(BUILD_PKGS) $(DEV_PKGS))

deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.c | $(NEED_DEPS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC     $<")
	$(Q)$(CC) $(ALLCPPFLAGS) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/daemon/main.o: ALLCFLAGS += $(SYSTEMD_CFLAGS)

# Two archives of the same objects.  $(LIB_A), the one installed, is one
# object made from lib/*.o by a partial link (ld -r), in which objcopy
# makes the hidden symbols local: the sb_* functions that lib/ files share
# are hidden (-fvisibility=hidden), so only shmbus_* stay global, as in the
# shared library, and a program's own sb_* never clashes with ours.
# $(LIB_INT) keeps lib/*.o as they are, sb_* global: for the programs of
# this tree that call the internals (shmbusd, shmbusctl and busstat:
# lib/contract.h; the tests, benchmarks and fuzz targets), never installed.
# The examples link $(LIB_A), as a user would.
$(LIB_A): $(LIB_OBJS)
	@$(if $(Q),echo "  AR     $@")
	$(Q)$(CC) $(SAN) -r -nostdlib -o $(BUILD)/libshmbus.o $^
	$(Q)$(OBJCOPY) --localize-hidden $(BUILD)/libshmbus.o
	$(Q)rm -f $@ && $(AR) rcs $@ $(BUILD)/libshmbus.o

$(LIB_INT): $(LIB_OBJS)
	@$(if $(Q),echo "  AR     $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIB_SO): $(LIB_OBJS) lib/libshmbus.map
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -shared -Wl,-soname,$(SONAME) -Wl,-z,defs \
		-Wl,--version-script=lib/libshmbus.map -o $@ $(LIB_OBJS) $(LDLIBS_LIB)
	$(Q)ln -sf $(SONAME) $(BUILD)/libshmbus.so

# The install paths and the version, recorded: the files that embed them
# (shmbus.pc, the systemd unit) are made again when one of them changes,
# as between `make` and `make install PREFIX=/usr`.  The record is
# rewritten only when it differs, so that nothing else is remade.
INSTALL_VARS = PREFIX=$(PREFIX) LIBDIR=$(LIBDIR) INCLUDEDIR=$(INCLUDEDIR) \
	       SBINDIR=$(SBINDIR) VERSION=$(VERSION)
$(BUILD)/install-vars: FORCE
	@mkdir -p $(BUILD)
	$(Q)echo '$(INSTALL_VARS)' | cmp -s - $@ || echo '$(INSTALL_VARS)' > $@

PC_LIBDIR     = $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
$(BUILD)/shmbus.pc: $(BUILD)/install-vars
	@$(if $(Q),echo "  GEN    $@")
	$(Q)printf 'prefix=%s\nlibdir=%s\nincludedir=%s\n\nName: shmbus\nDescription: lock-free message bus over shared memory\nVersion: %s\nLibs: -L$${libdir} -lshmbus\nLibs.private: -lnuma -lpthread -lisal\nCflags: -I$${includedir}\n' \
		'$(PREFIX)' '$(PC_LIBDIR)' '$(PC_INCLUDEDIR)' '$(VERSION)' > $@

$(UNIT): docs/shmbusd.service.in $(BUILD)/install-vars
	@$(if $(Q),echo "  GEN    $@")
	$(Q)sed 's|@SBINDIR@|$(SBINDIR)|g' $< > $@

# Tests link the internal archive: they call sb_* functions, and
# sanitizers see every frame.  The archive goes last, after the fixtures
# some suites add below, which call sb_* functions too.
$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TEST_HELP) $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) $(TEST_LDFLAGS) -o $@ \
		$(filter-out $(LIB_INT),$^) $(LIB_INT) $(TEST_LIBS)

# Every installed header compiles as C++11 without a warning (each one
# first, alone, through -include), and a C++ program links the installed
# archive.
$(CXX_TEST): tests/cxx_headers.cc $(HEADERS) $(LIB_A) | $(NEED_DEPS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CXX    $@")
	$(Q)for h in $(HEADERS); do \
		$(CXX) -std=c++11 -Wall -Wextra -Werror -pedantic $(ALLCPPFLAGS) \
			-fsyntax-only -include $$h -x c++ /dev/null || exit 1; \
	done
	$(Q)$(CXX) -std=c++11 -Wall -Wextra -Werror -pedantic $(ALLCPPFLAGS) \
		$(CXXFLAGS) $(SAN) $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS_LIB)

# test_alloc counts the library's allocator calls.
$(BUILD)/tests/test_alloc: TEST_LDFLAGS = \
	-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=posix_memalign

# test_repair kills a producer at its wake-up call (syscall() wrapped).
$(BUILD)/tests/test_repair: TEST_LDFLAGS = -Wl,--wrap=syscall

# test_hist tests the benchmarks' histogram and clock step.
$(BUILD)/tests/test_hist: $(BUILD)/benchmarks/hist.o $(BUILD)/benchmarks/harness.o
$(BUILD)/tests/test_hist: TEST_LIBS += -lm

# The daemon links the static library: it uses the private entry points
# of lib/contract.h (the scan of a channel, reap.c; the rules it shares
# with the library) that the shared library does not export.
$(SHMBUSD): $(DAEMON_OBJS) $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS) $(SYSTEMD_LIBS)

# shmbusctl takes sizes by the config file's rule (lib/contract.h).
$(BUILD)/tools/shmbusctl: $(BUILD)/tools/shmbusctl.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

# busstat reads consumer groups through lib/contract.h (sb_group_*); only
# it needs ncurses.
$(BUILD)/tools/busstat: $(BUILD)/tools/busstat.o $(BUILD)/tools/busstat_groups.o \
		$(BUILD)/tools/busstat_watch.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ -Wl,--as-needed -lncurses $(LDLIBS_LIB)

# Another tool links the installed archive, as a user would.
$(BUILD)/tools/%: $(BUILD)/tools/%.o $(LIB_A)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ -Wl,--as-needed -lncurses $(LDLIBS_LIB)

$(BUILD)/benchmarks/bench_%: $(BUILD)/benchmarks/bench_%.o $(BUILD)/benchmarks/hist.o \
		$(BUILD)/benchmarks/harness.o $(BUILD)/benchmarks/pingpong.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ -lm $(LDLIBS_LIB) -lzmq -lrt

$(BUILD)/benchmarks/bench_latency: $(BUILD)/benchmarks/kernel_paths.o

# bench_failover drives an HA pair and etcd with the failover tests'
# fixtures (tests/failover_fixture.h), under Criterion.
$(BUILD)/benchmarks/bench_failover: $(BUILD)/benchmarks/bench_failover.o \
		$(TEST_HELP) $(BUILD)/tests/failover_fixture.o \
		$(BUILD)/daemon/etcd.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS_LIB) \
		-lcurl -ljansson -lcrypto

# Benchmarks print their baselines measured in the same run; see
# docs/performance.md.  bench-quick only checks that they all run.
bench: $(DEPS_STAMP) all $(BENCH_BINS)
	$(Q)for b in $(BENCH_BINS); do $$b || exit 1; done
	$(Q)gnuplot benchmarks/plot.gp && echo "plots: benchmarks/results/*.png"

bench-quick: $(DEPS_STAMP) all $(BENCH_BINS)
	$(Q)for b in $(BENCH_BINS); do BENCH_QUICK=1 $$b -q || exit 1; done

# Instructions per message (claim, 32 B memcpy, commit, poll), counted by
# callgrind: the difference between two loop lengths.  Needs valgrind.
INSN_LOOP = $(BUILD)/benchmarks/insn_loop
$(INSN_LOOP): $(BUILD)/benchmarks/insn_loop.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

bench-insn: $(INSN_LOOP)
	$(Q)command -v valgrind >/dev/null || { echo "bench-insn: needs valgrind (apt-get install valgrind)"; exit 1; }
	$(Q)for m in zc copy; do \
		for n in 100000 200000; do \
			valgrind --tool=callgrind --callgrind-out-file=/dev/null $(INSN_LOOP) $$n $$m 2>&1 | \
				sed -n 's/.*I *refs: *//p' | tr -d , > $(BUILD)/insn.$$m.$$n || exit 1; \
		done; \
		echo "instructions per message ($$m): $$(( ($$(cat $(BUILD)/insn.$$m.200000) - $$(cat $(BUILD)/insn.$$m.100000)) / 100000 ))"; \
	done

$(BUILD)/examples/%: $(BUILD)/examples/%.o $(LIB_A)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

# A test binary that hangs is killed after TEST_TIMEOUT seconds (a failure,
# never a stuck CI job).
TEST_TIMEOUT ?= 600

# Each test binary runs with Criterion's own parallel jobs, two, one binary
# after another so that the stress tests have both cores.  The failover
# scenarios (test_failover, test_arbiter) mostly wait out lease terms; two
# at once keep their primaries' 2 s leases renewed because the logging
# publisher paces itself (fo_pace_us in tests/failover_fixture.h): back to
# back, its synchronous round trips kept both daemons' agents on the CPUs.
TEST_JOBS ?= 2
# Every memory-ordering edge labelled on both of its sides, and listed in
# docs/design.md (tools/check-ordering.py); then the checker itself, which
# must pass tests/ordering/good.c and catch what each bad_*.c plants (the
# finding its "expect:" line names).
check-ordering:
	$(Q)python3 tools/check-ordering.py && echo "check-ordering: ok"
	$(Q)T=tests/ordering; python3 tools/check-ordering.py --table $$T/edges.md \
		$$T/good.c >/dev/null || { echo "check-ordering: good.c refused"; exit 1; }; \
	for f in $$T/bad_*.c; do \
		want=$$(sed -n 's|^/\* expect: \(.*\) \*/$$|\1|p' $$f); \
		out=$$(python3 tools/check-ordering.py --table $$T/edges.md $$f 2>&1); \
		[ $$? = 1 ] && [ -n "$$want" ] && printf '%s' "$$out" | grep -q -- "$$want" || \
			{ echo "check-ordering: $$f: '$$want' not found"; exit 1; }; \
	done; echo "check-ordering: its own test: ok"

# The library's minor version is that of its newest symbols: a program
# that checks shmbus_version() before calling a function must be right.
check-version:
	$(Q)newest=$$(sed -n 's/^SHMBUS_0\.\([0-9]*\) {$$/\1/p' lib/libshmbus.map | sort -n | tail -1); \
	minor=$$(echo $(VERSION) | cut -d. -f2); \
	[ "$$newest" = "$$minor" ] || { echo "check-version: include/shmbus.h says 0.$$minor, lib/libshmbus.map's newest symbols are SHMBUS_0.$$newest"; exit 1; }; \
	echo "check-version: $(VERSION): ok"

test: $(DEPS_STAMP) all $(CXX_TEST) $(TEST_BINS) check-ordering check-version
	$(Q)echo "== $(CXX_TEST)"; $(CXX_TEST)
	$(Q)fail=0; ff=$(CURDIR)/$(BUILD)/fini-failures; for t in $(TEST_BINS); do \
		echo "== $$t"; rm -f $$ff; s=$$(date +%s); BUSSTAT=$(BUILD)/tools/busstat SHMBUSD=$(SHMBUSD) \
		SHMBUSCTL=$(BUILD)/tools/shmbusctl SHMBUS_FINI_FAILURES=$$ff \
		timeout -k 10 $(TEST_TIMEOUT) \
		$$t --jobs=$(TEST_JOBS) $(TEST_ARGS) || { echo "FAILED (or timed out): $$t"; fail=1; }; \
		echo "   ($$(( $$(date +%s) - s )) s)"; \
		if [ -s $$ff ]; then echo "FAILED in teardown: $$t"; cat $$ff; fail=1; fi; \
	done; rm -f $$ff; exit $$fail

sanitize:
	$(Q)LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
		$(MAKE) --no-print-directory BUILD=build-asan \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		CFLAGS="-O1 -g" SHMBUS_STRESS_N=200000 test

# TSan does not model atomic_thread_fence (gcc warns, -Wtsan): it checks the
# release/acquire edges; the fence-paired edges (F1, F3, R2/A2 in
# docs/design.md) are exercised by the multi-process tests instead.
# Criterion's runner cannot start under TSan (Snaipe/Criterion#274), so the
# threaded scenario (tests/threads_impl.h) runs through its own driver.
TSAN_BIN = $(BUILD)/tests/tsan_threads
$(TSAN_BIN): $(BUILD)/tests/tsan_threads.o $(BUILD)/tests/common.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

TSAN_GROUPS = $(BUILD)/tests/tsan_groups
$(TSAN_GROUPS): $(BUILD)/tests/tsan_groups.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

TSAN_DAEMON = $(BUILD)/tests/tsan_daemon
$(TSAN_DAEMON): $(BUILD)/tests/tsan_daemon.o $(BUILD)/tests/common.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_LIB)

# The second driver: the client library's threads and shmbusd's, across a
# kill -9 and restart of the daemon (both built with TSan).
tsan-run: $(DEPS_STAMP) $(TSAN_BIN) $(TSAN_GROUPS) $(TSAN_DAEMON) $(SHMBUSD)
	$(Q)TSAN_OPTIONS=halt_on_error=1 timeout -k 10 $(TEST_TIMEOUT) $(TSAN_BIN)
	$(Q)TSAN_OPTIONS=halt_on_error=1 timeout -k 10 $(TEST_TIMEOUT) $(TSAN_GROUPS)
	$(Q)TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
		SHMBUS_TSAN_DAEMON_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp" \
		SHMBUSD=$(SHMBUSD) timeout -k 10 $(TEST_TIMEOUT) $(TSAN_DAEMON)
	$(Q)$(MAKE) --no-print-directory BUILD=build SAN= CFLAGS="-O2 -g" \
		build/tests/test_repl build/tests/test_repl_roles \
		build/tests/test_group_daemon build/tests/test_journal \
		build/tests/test_journal_recovery build/tests/test_journal_device \
		build/tests/test_failover
	$(Q)for t in test_repl test_repl_roles test_group_daemon test_journal \
		 test_journal_recovery test_journal_device test_failover; do \
		echo "== build/tests/$$t with $(SHMBUSD) (the daemons under TSan)"; \
		ff=$(CURDIR)/$(BUILD)/fini-failures; rm -f $$ff; \
		TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp" SHMBUSD=$(SHMBUSD) \
		SHMBUS_FINI_FAILURES=$$ff SHMBUS_JOURNAL_N=100000 \
		timeout -k 10 $(TEST_TIMEOUT) build/tests/$$t --jobs=$(TEST_JOBS) && ! { [ -s $$ff ] && cat $$ff; } || exit 1; \
	done

tsan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-tsan \
		SAN="-fsanitize=thread -Wno-tsan" CFLAGS="-O1 -g" SHMBUS_STRESS_N=100000 tsan-run

demo: $(BUILD_DEPS_STAMP) all
	$(Q)sh examples/demo.sh $(BUILD)

# DESTDIR stages the tree (packaging); LIBDIR=/usr/lib/x86_64-linux-gnu
# for Debian's multiarch layout.  shmbusd goes to SBINDIR (an
# administrator's daemon), busstat and shmbusctl to BINDIR.  Without
# DESTDIR and as root, ldconfig makes the new library known at once.
install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(INCLUDEDIR)/shmbus $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSTEMDUNITDIR)
	$(INSTALL) -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/$(SOREAL)
	ln -sf $(SOREAL) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libshmbus.so
	$(INSTALL) -m 644 $(BUILD)/shmbus.pc $(DESTDIR)$(PKGCONFIGDIR)/
	$(INSTALL) -m 644 include/shmbus.h $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 644 $(filter include/shmbus/%,$(HEADERS)) $(DESTDIR)$(INCLUDEDIR)/shmbus/
	$(INSTALL) -m 755 $(TOOL_BINS) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 755 $(SHMBUSD) $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 $(MAN3) $(DESTDIR)$(MANDIR)/man3/
	$(Q)for f in $(MAN3_LINKS); do \
		echo '.so man3/shmbus.3' > $(DESTDIR)$(MANDIR)/man3/$$f.3 || exit 1; \
	done
	$(INSTALL) -m 644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 644 $(UNIT) $(DESTDIR)$(SYSTEMDUNITDIR)/
	$(Q)$(call run_ldconfig)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libshmbus.a $(DESTDIR)$(LIBDIR)/$(SOREAL) \
		$(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libshmbus.so \
		$(DESTDIR)$(PKGCONFIGDIR)/shmbus.pc \
		$(HEADERS:include/%=$(DESTDIR)$(INCLUDEDIR)/%) \
		$(TOOL_BINS:$(BUILD)/tools/%=$(DESTDIR)$(BINDIR)/%) \
		$(DESTDIR)$(SBINDIR)/shmbusd \
		$(MAN1:docs/%=$(DESTDIR)$(MANDIR)/man1/%) \
		$(MAN3:docs/%=$(DESTDIR)$(MANDIR)/man3/%) \
		$(MAN3_LINKS:%=$(DESTDIR)$(MANDIR)/man3/%.3) \
		$(MAN8:docs/%=$(DESTDIR)$(MANDIR)/man8/%) \
		$(DESTDIR)$(SYSTEMDUNITDIR)/$(notdir $(UNIT))
	rmdir $(DESTDIR)$(INCLUDEDIR)/shmbus 2>/dev/null || true
	$(Q)$(call run_ldconfig)

run_ldconfig = if [ -n "$(DESTDIR)" ]; then \
		echo "  (DESTDIR set: ldconfig not run; the package's postinst does)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "ldconfig"; ldconfig; \
	else \
		echo "  (not root: ldconfig not run; run it as root before using $(SONAME))"; \
	fi

# ------------------------------------------------------------------ fuzzing
# libFuzzer targets (fuzz/, docs/fuzzing.md), built by clang with ASan and
# UBSan into $(FUZZ_BUILD) (gcc's pragmas ignored).  `make fuzz` runs each
# for FUZZ_TIME seconds, one after another, from its seed corpus
# fuzz/corpus/NAME (fuzz/NAME.dict, if any, is its dictionary); what a run
# learns goes to $(FUZZ_BUILD)/corpus/NAME, what it finds (crash-*, leak-*,
# timeout-*) to $(FUZZ_BUILD)/artifacts/NAME/.  FUZZ_TARGETS=channel runs
# one; FUZZ_ARGS adds libFuzzer options.  The suite replays the corpus and
# fuzz/regress/ (tests/test_fuzz_regress.c).
FUZZ_BUILD   ?= build-fuzz
FUZZ_TIME    ?= 60
FUZZ_TARGETS ?= channel control config frames group journal
FUZZ_ARGS    ?=
FUZZ_PKGS     = clang libclang-rt-14-dev
FUZZ_SAN      = -fsanitize=fuzzer-no-link,address,undefined \
		-fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_DAEMON_OBJS = $(filter-out $(BUILD)/daemon/main.o,$(DAEMON_OBJS))
FUZZ_LEN_channel = 32768
FUZZ_LEN_control = 8192
FUZZ_LEN_config  = 4096
FUZZ_LEN_frames  = 65536
FUZZ_LEN_group   = 32768
FUZZ_LEN_journal = 4096

.PHONY: fuzz fuzz-build fuzz-bins fuzz-seeds fuzz-clean

# Installs clang and its fuzzer runtime when run as root; else names them.
$(FUZZ_BUILD)/.fuzz-deps-ok: Makefile
	$(Q)mkdir -p $(FUZZ_BUILD)
	$(call install_pkgs,$(FUZZ_PKGS))

fuzz-build: $(FUZZ_BUILD)/.fuzz-deps-ok
	$(Q)$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
		SAN="$(FUZZ_SAN)" CFLAGS="-O1 -g" \
		FUZZ_URCU_SAN=-fno-sanitize=pointer-overflow fuzz-bins

# liburcu's cds_lfht_for_each_entry() ends every walk with
# caa_container_of(NULL), which clang's pointer-overflow check reports (a
# zero offset applied to a null pointer): not checked in the code that
# walks the daemon's tables.
$(BUILD)/daemon/%.o $(BUILD)/fuzz/fuzz_control.o: ALLCFLAGS += $(FUZZ_URCU_SAN)

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_channel: $(BUILD)/fuzz/fuzz_channel.o $(BUILD)/fuzz/fuzz_support.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_LIB)

# The daemon's objects but main.o: the harness calls its request parser
# and dispatcher in-process.
$(BUILD)/fuzz/fuzz_control: $(BUILD)/fuzz/fuzz_control.o $(BUILD)/fuzz/fuzz_support.o \
		$(FUZZ_DAEMON_OBJS) $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(DAEMON_LIBS)

$(BUILD)/fuzz/fuzz_config: $(BUILD)/fuzz/fuzz_config.o $(BUILD)/fuzz/fuzz_support.o \
		$(BUILD)/daemon/config.o $(BUILD)/daemon/groups_conf.o \
		$(BUILD)/daemon/log.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ -linih $(LDLIBS_LIB)

# The standby's frame parser: the wire format and the library's apply.
$(BUILD)/fuzz/fuzz_frames: $(BUILD)/fuzz/fuzz_frames.o $(BUILD)/fuzz/fuzz_support.o \
		$(BUILD)/daemon/wire.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ -lcrypto $(LDLIBS_LIB)

# A consumer group's file under its members, the maintenance and
# replication's apply (lib/group*.c).
$(BUILD)/fuzz/fuzz_group: $(BUILD)/fuzz/fuzz_group.o $(BUILD)/fuzz/fuzz_support.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_LIB)

# A journal's files under its readers (lib/journal.c, lib/replay.c).
$(BUILD)/fuzz/fuzz_journal: $(BUILD)/fuzz/fuzz_journal.o $(BUILD)/fuzz/fuzz_support.o $(LIB_INT)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_LIB)

fuzz: fuzz-build
	$(Q)fail=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t; \
		echo "== fuzz_$$t: $(FUZZ_TIME) s"; \
		$(FUZZ_BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_TIME) \
			-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-max_len=$$(case $$t in channel) echo $(FUZZ_LEN_channel);; \
				control) echo $(FUZZ_LEN_control);; frames) echo $(FUZZ_LEN_frames);; \
				group) echo $(FUZZ_LEN_group);; journal) echo $(FUZZ_LEN_journal);; \
				*) echo $(FUZZ_LEN_config);; esac) \
			$$([ -f fuzz/$$t.dict ] && echo -dict=fuzz/$$t.dict) \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t/ $(FUZZ_ARGS) \
			$(FUZZ_BUILD)/corpus/$$t fuzz/corpus/$$t \
			2>$(FUZZ_BUILD)/fuzz_$$t.log || { fail=1; \
			echo "FAILED: fuzz_$$t (see $(FUZZ_BUILD)/fuzz_$$t.log and $(FUZZ_BUILD)/artifacts/$$t/)"; }; \
		grep -E '^(#[0-9]+.*DONE|stat::|Done)' $(FUZZ_BUILD)/fuzz_$$t.log; \
		rm -rf /dev/shm/shmbus-fuzz-$$t-*; \
	done; exit $$fail

# Regenerates the seed corpus of the channel, control and group targets
# (the config and frames seeds are written by hand).
fuzz-seeds: fuzz-build
	$(Q)for t in channel control group; do \
		mkdir -p fuzz/corpus/$$t; \
		SHMBUS_FUZZ_SEEDS=fuzz/corpus/$$t $(FUZZ_BUILD)/fuzz/fuzz_$$t -runs=0 >/dev/null 2>&1 || exit 1; \
	done

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

# The suite's replay of the fuzzers' inputs: the harnesses built by gcc,
# without libFuzzer's entry point.
$(BUILD)/fuzz/replay_%.o: fuzz/fuzz_%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC     $@")
	$(Q)$(CC) $(ALLCPPFLAGS) -DSHMBUS_FUZZ_NO_ENTRY $(ALLCFLAGS) -c $< -o $@

$(BUILD)/tests/test_fuzz_regress: $(BUILD)/fuzz/replay_channel.o $(BUILD)/fuzz/replay_control.o \
		$(BUILD)/fuzz/replay_config.o $(BUILD)/fuzz/replay_frames.o \
		$(BUILD)/fuzz/replay_group.o $(BUILD)/fuzz/replay_journal.o \
		$(BUILD)/fuzz/fuzz_support.o $(FUZZ_DAEMON_OBJS)
$(BUILD)/tests/test_fuzz_regress: TEST_LIBS = $(LIB_INT) $(DAEMON_LIBS) -lcriterion

# test_hostile_peer speaks the replication protocol as a primary or a
# standby, with shmbusd's own frames and key proof.
$(BUILD)/tests/test_hostile_peer: $(BUILD)/daemon/wire.o $(BUILD)/daemon/tcp.o
$(BUILD)/tests/test_hostile_peer: TEST_LIBS = $(LIB_INT) -lcriterion \
	$(LDLIBS_LIB) -lcrypto

# test_busstat cuts a file under busstat through an LD_PRELOAD shim (not
# linked in: an order-only prerequisite; built without sanitizers).
$(BUILD)/tests/test_busstat: | $(BUILD)/tests/cut_after_map.so
$(BUILD)/tests/cut_after_map.so: tests/cut_after_map.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC     $@")
	$(Q)$(CC) -shared -fPIC -O1 -Wall -Wextra -Werror -o $@ $< -ldl

# The consumer-group suites share tests/group_fixture.c, the two
# journal suites tests/journal_fixture.c.
$(BUILD)/tests/test_group $(BUILD)/tests/test_group_races \
	$(BUILD)/tests/test_group_wait: $(BUILD)/tests/group_fixture.o
$(BUILD)/tests/test_journal $(BUILD)/tests/test_journal_recovery \
	$(BUILD)/tests/test_journal_device: $(BUILD)/tests/journal_fixture.o

# test_failover reads etcd itself, with shmbusd's client; test_arbiter
# also calls that client alone.
$(BUILD)/tests/test_failover $(BUILD)/tests/test_arbiter: \
	$(BUILD)/daemon/etcd.o $(BUILD)/tests/failover_fixture.o
$(BUILD)/tests/test_failover $(BUILD)/tests/test_arbiter: \
	TEST_LIBS = $(LIB_INT) -lcriterion $(LDLIBS_LIB) -lcurl -ljansson -lcrypto

# The soaks (as root, with etcd and network namespaces; not part of make
# test), linked as the failover tests are.
#   soak-groups: a consumer group through kill -9 failovers and a
#   switchover, every delivery checked (tests/soak_groups.c; a minute or
#   two).  SOAK_MODE=keyed or single_active, SOAK_ROUNDS, SOAK_WORK_US,
#   SOAK_SWITCH=0.
#   soak-repl: replication under faults in random order (switchover both
#   ways, kill -9 of either daemon, link cut, packet loss, shaping,
#   SIGSTOP; with etcd, failovers and etcd cuts), every acknowledged
#   message checked on both rings after each step (tests/soak_repl.c).
#   SOAK_SECONDS per soak (120), SOAK_SEED to repeat a run's faults.
SOAKS = $(BUILD)/tests/soak_groups $(BUILD)/tests/soak_repl
$(SOAKS): $(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HELP) $(LIB_INT) \
		$(BUILD)/daemon/etcd.o $(BUILD)/tests/failover_fixture.o
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(SAN) $(LDFLAGS) $(TEST_LDFLAGS) -o $@ $^ $(LIB_INT) -lcriterion \
		$(LDLIBS_LIB) -lcurl -ljansson -lcrypto

soak-groups: $(DEPS_STAMP) all $(BUILD)/tests/soak_groups
	SHMBUSD=$(SHMBUSD) $(BUILD)/tests/soak_groups

soak-repl: $(DEPS_STAMP) all $(BUILD)/tests/soak_repl
	SHMBUSD=$(SHMBUSD) SHMBUSCTL=$(BUILD)/tools/shmbusctl $(BUILD)/tests/soak_repl

clean:
	rm -rf $(BUILD) build build-asan build-tsan build-clang

export SHMBUS_STRESS_N

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
