/* SPDX-License-Identifier: MIT */
/*
 * repl_fixture.c - the HA pair of the replication tests (repl_fixture.h).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"

struct host A = { .tag = 'a' }, B = { .tag = 'b' };
bool pair_netns;
char pair_key[128];

static const char *shmbusd_path(void)
{
	const char *p = getenv("SHMBUSD");

	return p && *p ? p : "build/shmbusd";
}

int host_sh(const struct host *h, const char *fmt, ...)
{
	char cmd[1024], full[1200];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (h && h->ns[0])
		snprintf(full, sizeof(full), "ip netns exec %s sh -c '%s'",
			 h->ns, cmd);
	else
		snprintf(full, sizeof(full), "sh -c '%s'", cmd);
	rc = system(full);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* What the names of this run's namespaces, links and files start with:
 * SHMBUS_TEST_PREFIX (say "h3": namespaces h3a<pid>, files
 * shmbus-h3-repl<pid>-a...), so that runs beside other users' keep to
 * their own; "sbt" and shmbus-test-repl / shmbus-repl by default. */
static const char *pfx(void)
{
	const char *p = getenv("SHMBUS_TEST_PREFIX");

	return p && *p && strlen(p) <= 4 ? p : NULL;
}

const char *pair_prefix(void)
{
	return pfx();
}

static const char *ns_pfx(void)
{
	return pfx() ? pfx() : "sbt";
}

static void file_pfx(char *dir, size_t dn, char *tmp, size_t tn)
{
	if (pfx()) {
		snprintf(dir, dn, "shmbus-%s-repl", pfx());
		snprintf(tmp, tn, "shmbus-%s-repl", pfx());
	} else {
		snprintf(dir, dn, "shmbus-test-repl");
		snprintf(tmp, tn, "shmbus-repl");
	}
}

/* Namespaces of runs that died without their teardown. */
static void sweep_namespaces(void)
{
	DIR *d = opendir("/run/netns");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t pl = strlen(ns_pfx());
		int pid;
		char c;

		if (!strncmp(e->d_name, ns_pfx(), pl) &&
		    sscanf(e->d_name + pl, "%c%d", &c, &pid) == 2 &&
		    kill(pid, 0) && errno == ESRCH)
			host_sh(NULL, "ip netns del %s 2>/dev/null", e->d_name);
	}
	closedir(d);
}

bool pair_netns_possible(void)
{
	return geteuid() == 0 && system("ip netns list >/dev/null 2>&1") == 0;
}

static void net_setup(void)
{
	int me = getpid();
	int x = (me >> 8) & 0xff, y = me & 0xff;

	pair_netns = pair_netns_possible();
	if (pair_netns) {
		sweep_namespaces();
		snprintf(A.ns, sizeof(A.ns), "%sa%d", ns_pfx(), me);
		snprintf(B.ns, sizeof(B.ns), "%sb%d", ns_pfx(), me);
		snprintf(A.ifname, sizeof(A.ifname), "%sva%d",
			 pfx() ? pfx() : "", me % 1000000);
		snprintf(B.ifname, sizeof(B.ifname), "%svb%d",
			 pfx() ? pfx() : "", me % 1000000);
		snprintf(A.ip, sizeof(A.ip), "10.%d.%d.1", 100 + x % 100, y);
		snprintf(B.ip, sizeof(B.ip), "10.%d.%d.2", 100 + x % 100, y);
		cr_assert_eq(host_sh(NULL,
			"ip netns add %s && ip netns add %s && "
			"ip link add %s type veth peer name %s && "
			"ip link set %s netns %s && ip link set %s netns %s && "
			"ip -n %s addr add %s/24 dev %s && "
			"ip -n %s addr add %s/24 dev %s && "
			"ip -n %s link set %s up && ip -n %s link set %s up && "
			"ip -n %s link set lo up && ip -n %s link set lo up",
			A.ns, B.ns, A.ifname, B.ifname, A.ifname, A.ns,
			B.ifname, B.ns, A.ns, A.ip, A.ifname, B.ns, B.ip,
			B.ifname, A.ns, A.ifname, B.ns, B.ifname, A.ns, B.ns),
			0, "network namespaces could not be set up");
		snprintf(A.listen, sizeof(A.listen), "%s:7400", A.ip);
		snprintf(B.listen, sizeof(B.listen), "%s:7400", B.ip);
	} else {
		int port = 20000 + (me % 20000) * 2;

		A.ns[0] = B.ns[0] = 0;
		strcpy(A.ip, "127.0.0.1");
		strcpy(B.ip, "127.0.0.1");
		snprintf(A.listen, sizeof(A.listen), "127.0.0.1:%d", port);
		snprintf(B.listen, sizeof(B.listen), "127.0.0.1:%d", port + 1);
	}
}

static void host_paths(struct host *h)
{
	int me = getpid();
	char d[32], t[32];

	file_pfx(d, sizeof(d), t, sizeof(t));
	snprintf(h->dir, sizeof(h->dir), "/dev/shm/%s%d-%c", d, me, h->tag);
	snprintf(h->conf, sizeof(h->conf), "/tmp/%s%d-%c.conf", t, me, h->tag);
	snprintf(h->log, sizeof(h->log), "/tmp/%s%d-%c.log", t, me, h->tag);
	snprintf(h->state, sizeof(h->state), "/tmp/%s%d-%c.state", t, me,
		 h->tag);
	snprintf(h->run, sizeof(h->run), "/tmp/%s%d-%c.run", t, me, h->tag);
	/* In the run directory, with the bus file the daemon writes beside
	 * it (which stays when it stops): the teardown removes both. */
	snprintf(h->sock, sizeof(h->sock), "%.97s/bus.sock", h->run);
	mkdir(h->run, 0700);
	h->pid = 0;
	unlink(h->log);
}

void host_config(struct host *h, const char *role, const char *peer,
		 const char *chans, const char *extra)
{
	FILE *f = fopen(h->conf, "w");
	char own[2048];
	size_t o = 0;

	/* "{host}" in extra: this host's tag (a or b), for what differs
	 * between the two (an arbiter's endpoint through a host's own
	 * forwarder, say). */
	for (const char *p = extra; *p && o + 2 < sizeof(own);) {
		if (!strncmp(p, "{host}", 6)) {
			own[o++] = h->tag;
			p += 6;
		} else {
			own[o++] = *p++;
		}
	}
	own[o] = 0;
	extra = own;
	cr_assert(f);
	fprintf(f, "[bus]\nname = trepl\nshm_dir = %s\nsocket = %s\n"
		"reap_interval_ms = 10\nlog_level = debug\n"
		"journal_dir = %s/jnl\n"
		"[replication]\nrole = %s\nlisten = %s\npeer = %s\n"
		"key_file = %s\nstate_dir = %s\n%s%s\n%s",
		h->dir, h->sock, h->dir, role, h->listen, peer, pair_key,
		h->state,
		strstr(extra, "sync_timeout_ms") ? "" :
		"sync_timeout_ms = 1000\n", extra, chans);
	fclose(f);
}

void host_start(struct host *h)
{
	cr_assert(host_try_start(h), "daemon %c exited at start (see %s)",
		  h->tag, h->log);
}

bool host_try_start(struct host *h)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(h->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		setenv("SHMBUS_RUN_DIR", h->run, 1);
		if (h->ns[0])
			execlp("ip", "ip", "netns", "exec", h->ns,
			       shmbusd_path(), "-c", h->conf, (char *)NULL);
		else
			execl(shmbusd_path(), "shmbusd", "-c", h->conf,
			      (char *)NULL);
		_exit(127);
	}
	h->pid = pid;
	for (int i = 0; i < 500; i++) {
		shmbus_bus *b = shmbus_connect_timeout(h->sock, 0);

		if (b) {
			shmbus_disconnect(b);
			return true;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			h->pid = 0;
			return false;
		}
		usleep(10000);
	}
	cr_assert_fail("daemon %c does not answer (see %s)", h->tag, h->log);
	return false;
}

void host_kill(struct host *h, int sig)
{
	int st;

	if (h->pid <= 0)
		return;
	kill(h->pid, sig);
	waitpid(h->pid, &st, 0);
	h->pid = 0;
}

bool host_log_wait(const struct host *h, const char *what, int timeout_ms)
{
	for (int t = 0; t <= timeout_ms; t += 10) {
		FILE *f = fopen(h->log, "r");
		char line[1024];
		bool found = false;

		while (f && !found && fgets(line, sizeof(line), f))
			found = strstr(line, what) != NULL;
		if (f)
			fclose(f);
		if (found)
			return true;
		usleep(10000);
	}
	return false;
}

/* Every channel section of `chans` that B should link. */
/* Whether h's log has `what` on n lines, within 5 s. */
static bool log_lines(const struct host *h, const char *what, int n)
{
	for (int t = 0; t < 5000; t += 10) {
		FILE *f = fopen(h->log, "r");
		char line[1024];
		int seen = 0;

		while (f && fgets(line, sizeof(line), f))
			seen += strstr(line, what) != NULL;
		if (f)
			fclose(f);
		if (seen >= n)
			return true;
		usleep(10000);
	}
	return false;
}

/* Every replicated channel linked on B, and in sync on A (a publisher
 * that starts at once then finds its pub_sync acknowledged, not
 * degraded: under the sanitizers A's agent may judge after B links). */
static void wait_linked(const char *chans)
{
	const char *p = chans;
	int n = 0;

	while ((p = strstr(p, "replicate = ")) != NULL) {
		if (strncmp(p + 12, "off", 3))
			n++;
		p++;
	}
	cr_assert(log_lines(&B, ": linked to primary", n),
		  "the standby did not link (see %s and %s)", A.log, B.log);
	cr_assert(log_lines(&A, ": standby in sync at", n),
		  "the primary did not find its standby in sync (see %s and "
		  "%s)", A.log, B.log);
}

void pair_paths(void)
{
	host_paths(&A);
	host_paths(&B);
}

void pair_setup(const char *chans, const char *extra)
{
	int fd;
	char key[48];

	net_setup();
	host_paths(&A);
	host_paths(&B);
	{
		char d[32], t[32];

		file_pfx(d, sizeof(d), t, sizeof(t));
		snprintf(pair_key, sizeof(pair_key), "/tmp/%s%d.key", t,
			 getpid());
	}
	fd = open(pair_key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (char)('a' + rand() % 26);
	cr_assert_eq(write(fd, key, sizeof(key)), (ssize_t)sizeof(key));
	close(fd);
	host_config(&A, "primary", B.listen, chans, extra);
	host_config(&B, "standby", A.listen, chans, extra);
	host_start(&A);
	host_start(&B);
	wait_linked(chans);
}

/* A host's directory and what is in it, journals' subdirectories too. */
static void rm_tree(const char *dir)
{
	th_rmdir(dir);
}

/* Stops h's daemon as an operator would: it must exit 0, and its log
 * must hold no sanitizer report. */
static bool stop_failed;

static void host_stop(struct host *h)
{
	char what[256];
	int st = 0;

	if (h->pid > 0) {
		kill(h->pid, SIGCONT);
		kill(h->pid, SIGTERM);
		for (int i = 0; i < 1000 && waitpid(h->pid, &st, WNOHANG) == 0;
		     i++)
			usleep(10000);
		if (waitpid(h->pid, &st, WNOHANG) == 0) {
			kill(h->pid, SIGKILL);
			waitpid(h->pid, &st, 0);
			snprintf(what, sizeof(what), "daemon %c did not stop in "
				 "10 s", h->tag);
			th_fini_fail(what);
			stop_failed = true;
		} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			snprintf(what, sizeof(what), "daemon %c did not stop "
				 "cleanly (status %d; see %s)", h->tag, st,
				 h->log);
			th_fini_fail(what);
			stop_failed = true;
		}
		h->pid = 0;
	}
	if (host_log_wait(h, "Sanitizer", 0) ||
	    host_log_wait(h, "runtime error", 0)) {
		snprintf(what, sizeof(what), "daemon %c: a sanitizer report in "
			 "%s", h->tag, h->log);
		th_fini_fail(what);
		stop_failed = true;
	}
}

void pair_teardown(void)
{
	host_stop(&A);
	host_stop(&B);
	if (pair_netns) {
		host_sh(NULL, "ip netns del %s 2>/dev/null", A.ns);
		host_sh(NULL, "ip netns del %s 2>/dev/null", B.ns);
	}
	rm_tree(A.dir);
	rm_tree(B.dir);
	rm_tree(A.state);
	rm_tree(B.state);
	rm_tree(A.run);
	rm_tree(B.run);
	unlink(A.conf);
	unlink(B.conf);
	unlink(A.sock);
	unlink(B.sock);
	host_sh(NULL, "rm -f %s.lock %s.lock", A.sock, B.sock);
	unlink(pair_key);
	/* A daemon's log that shows a failure stays for whoever looks. */
	if (!getenv("SHMBUS_KEEP_LOGS") && !stop_failed) {
		unlink(A.log);
		unlink(B.log);
	}
}

shmbus_channel *host_open(const struct host *h, shmbus_bus **bus,
			  const char *chan, enum shmbus_role role)
{
	*bus = shmbus_connect(h->sock);
	if (!*bus)
		return NULL;
	return shmbus_bus_open(*bus, chan, role);
}

shmbus_sub *ring_reader(shmbus_channel *ch)
{
	struct shmbus_sub_attr sa;
	shmbus_sub *sub;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	sub = shmbus_sub_open(ch, &sa);
	/* From the oldest record the ring holds, whoever else reads. */
	if (sub)
		sb_sub_seek(sub, sb_ring_oldest(ch));
	return sub;
}

shmbus_channel *host_map(const struct host *h, const char *chan)
{
	return shmbus_channel_open(h->dir, chan);
}

const uint8_t *host_data(const struct host *h, const char *chan, size_t *len)
{
	char path[256];
	struct shmbus_hdr hd;
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", h->dir, chan);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	close(fd);
	snprintf(path, sizeof(path), "%s/" SHMBUS_DATA_NAME_FMT, h->dir, chan,
		 (unsigned long long)hd.data_id);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert(fstat(fd, &st) == 0);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert(p != MAP_FAILED);
	*len = hd.capacity;
	return p;
}

uint64_t pair_wait_caught_up(const char *chan, uint64_t min, int timeout_ms)
{
	shmbus_channel *a = host_map(&A, chan), *b = host_map(&B, chan);
	struct sb_repl_view va, vb, *pri;

	cr_assert(a && b);
	for (int t = 0;; t++) {
		sb_repl_read(a, &va);
		sb_repl_read(b, &vb);
		/* The primary's view of what the standby applied: the
		 * standby acknowledges once its records are committed, and
		 * its head moves before that. */
		pri = vb.flags & SHMBUS_REPL_STANDBY ? &va : &vb;
		if (va.head >= min && va.head == vb.head &&
		    pri->applied == pri->head)
			break;
		cr_assert(t < timeout_ms, "%s: B has %llu of A's %llu after "
			  "%d ms", chan, (unsigned long long)vb.head,
			  (unsigned long long)va.head, timeout_ms);
		usleep(1000);
	}
	shmbus_channel_close(a);
	shmbus_channel_close(b);
	return va.head;
}

void pair_assert_identical_range(const char *chan, uint64_t from,
				 uint64_t to)
{
	size_t la, lb;
	const uint8_t *a = host_data(&A, chan, &la), *b = host_data(&B, chan,
								    &lb);

	cr_assert_eq(la, lb);
	cr_assert(to - from <= la);
	for (uint64_t p = from; p < to; p++) {
		uint64_t i = p & (la - 1);

		if (a[i] != b[i])
			cr_assert_fail("%s: the rings differ at position %llu",
				       chan, (unsigned long long)p);
	}
	munmap((void *)a, la + 4096);
	munmap((void *)b, lb + 4096);
}

/* Where h's agent last went on past a gap on chan ("going on from P" in
 * its log), or 0. */
static uint64_t last_restart(const struct host *h, const char *chan)
{
	FILE *f = fopen(h->log, "r");
	char line[1024], what[128];
	uint64_t at = 0;

	snprintf(what, sizeof(what), "%s: gap: ", chan);
	while (f && fgets(line, sizeof(line), f)) {
		const char *g = strstr(line, what), *o;

		if (g && (o = strstr(g, "going on from ")))
			at = strtoull(o + strlen("going on from "), NULL, 10);
	}
	if (f)
		fclose(f);
	return at;
}

void pair_assert_identical(const char *chan)
{
	size_t la, lb;
	const uint8_t *a = host_data(&A, chan, &la), *b = host_data(&B, chan,
								    &lb);
	shmbus_channel *ca = host_map(&A, chan), *cb = host_map(&B, chan);
	struct sb_repl_view va, vb;

	cr_assert(ca && cb);
	sb_repl_read(ca, &va);
	sb_repl_read(cb, &vb);
	cr_assert_eq(va.head, vb.head, "%s: heads %llu and %llu", chan,
		     (unsigned long long)va.head, (unsigned long long)vb.head);
	cr_assert_eq(va.seq, vb.seq, "%s: sequence numbers differ", chan);
	cr_assert_eq(la, lb);
	if (vb.gaps) {
		/* A standby that went on past a gap holds, below where it
		 * went on, what it had before (older laps, or the padding
		 * over a gap of less than a lap): the rings agree from
		 * there. */
		uint64_t from = last_restart(&B, chan);

		if (va.head - from > la)
			from = va.head - la;
		munmap((void *)a, la + 4096);
		munmap((void *)b, lb + 4096);
		shmbus_channel_close(ca);
		shmbus_channel_close(cb);
		pair_assert_identical_range(chan, from, va.head);
		return;
	}
	for (size_t i = 0; i < la; i += 4096) {
		size_t n = la - i < 4096 ? la - i : 4096;

		/* With what tells a gap from damage: a standby that went on
		 * past a gap holds older laps beyond head. */
		cr_assert(memcmp(a + i, b + i, n) == 0,
			  "%s: the rings differ in bytes %zu..%zu (head at "
			  "byte %llu; gaps counted: %llu on A, %llu on B; "
			  "out of sync %llu times on A)", chan, i, i + n,
			  (unsigned long long)(va.head & (la - 1)),
			  (unsigned long long)va.gaps,
			  (unsigned long long)vb.gaps,
			  (unsigned long long)va.out_of_sync);
	}
	munmap((void *)a, la + 4096);
	munmap((void *)b, lb + 4096);
	shmbus_channel_close(ca);
	shmbus_channel_close(cb);
}

int host_ctl(const struct host *h, uint32_t op, uint32_t flags,
	     struct shmbus_ctl_repl_reply *out)
{
	shmbus_bus *b = shmbus_connect(h->sock);
	int rc;

	if (!b)
		return -errno;
	rc = sb_bus_repl(b, op, flags, out);
	if (rc)
		snprintf(out->text, sizeof(out->text), "%s",
			 shmbus_bus_strerror(b, rc));
	shmbus_disconnect(b);
	return rc;
}

void host_view(const struct host *h, const char *chan, struct sb_repl_view *v)
{
	/* Read-only: an inspector's mapping faults nothing in, and the
	 * callers look many times a second. */
	shmbus_channel *ch = shmbus_channel_open_ro(h->dir, chan);

	cr_assert(ch, "%s on %c", chan, h->tag);
	sb_repl_read(ch, v);
	shmbus_channel_close(ch);
}

struct in_ns {
	const struct host *h;
	int (*fn)(void *);
	void *arg;
};

static int enter_ns(void *p)
{
	struct in_ns *x = p;
	char path[128];
	int fd;

	if (x->h->ns[0]) {
		snprintf(path, sizeof(path), "/run/netns/%s", x->h->ns);
		fd = open(path, O_RDONLY);
		if (fd < 0 || setns(fd, CLONE_NEWNET))
			return 120;
		close(fd);
	}
	return x->fn(x->arg);
}

pid_t host_spawn(const struct host *h, int (*fn)(void *), void *arg)
{
	struct in_ns x = { h, fn, arg };

	return th_spawn(enter_ns, &x);
}

/* ------------------------------------------- what the tests run on A */

/* A publisher on A: n self-checking messages of mixed sizes (24..max),
 * producer id `id`, then a pub_sync.  Returns 0, or the step that
 * failed. */

int pair_publisher(void *arg)
{
	const struct pubarg *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 10000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[4096];
	uint64_t x = 0x9e3779b97f4a7c15ull * (p->id + 1);
	int rc;

	if (!pub)
		return 2;
	for (uint64_t i = 0; i < p->n; i++) {
		size_t len;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* Mostly small, some up to max. */
		len = TH_MSG_MIN + (x % 8 == 0 ? x % (p->max - TH_MSG_MIN)
					       : x % 100);
		th_msg_fill(msg, len, p->id, i);
		if (shmbus_publish(pub, msg, len))
			return 3;
		if (p->sync_each && shmbus_pub_sync(pub, 5000000000LL) != 0)
			return 4;
	}
	rc = shmbus_pub_sync(pub, 10000000000LL);
	if (rc == SHMBUS_SYNC_DEGRADED && p->degraded_ok)
		rc = 0;
	if (rc)
		return rc < 0 ? 10 - rc : 5;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

void pair_assert_published(const char *chan, int rc)
{
	cr_assert_eq(rc, 0, "publisher on %s: %s (exit code %d; above 10: "
		     "-errno + 10)", chan,
		     rc == 2 ? "no handle" :
		     rc == 3 ? "a publish failed" :
		     rc == 4 ? "a pub_sync after a message failed" :
		     rc == 5 ? "the last pub_sync said the standby is out of "
			       "sync" :
		     rc > 10 && rc < 128 ? "the last pub_sync failed" :
		     "it died", rc);
}

/* Reads the whole channel on h from its oldest record: every message
 * intact and in order per producer; returns how many. */
uint64_t pair_read_all(const struct host *h, const char *chan,
			 uint64_t until)
{
	uint64_t last[4];

	return pair_read_all_last(h, chan, until, last);
}

/* read_all(), and the last sequence number seen of each producer
 * (UINT64_MAX: none). */
uint64_t pair_read_all_last(const struct host *h, const char *chan,
			      uint64_t until, uint64_t last[4])
{
	shmbus_channel *ch = host_map(h, chan);
	shmbus_sub *sub;
	uint64_t next[4] = { 0 }, n = 0;
	bool have[4] = { false };
	uint8_t buf[4096];
	struct shmbus_msg info;

	cr_assert(ch);
	sub = ring_reader(ch);
	cr_assert(sub);
	for (;;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);
		uint32_t id;
		uint64_t seq;

		if (r == -EAGAIN)
			break;
		cr_assert(r >= 0, "read: %zd", r);
		cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &seq), 0,
			     "a damaged message at %llu",
			     (unsigned long long)info.pos);
		cr_assert(id < 4);
		/* The ring may no longer hold a producer's first message. */
		if (!have[id])
			next[id] = seq;
		have[id] = true;
		cr_assert_eq(seq, next[id], "producer %u: %llu after %llu", id,
			     (unsigned long long)seq,
			     (unsigned long long)next[id]);
		next[id]++;
		n++;
		if (info.pos + 16 >= until)
			break;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	for (int i = 0; i < 4; i++)
		last[i] = have[i] ? next[i] - 1 : UINT64_MAX;
	return n;
}

/* A publisher paced to `rate` messages per 10 ms, for `ms` milliseconds,
 * fixed 64-byte messages; counts in *done (shared memory not needed: the
 * test reads the rings). */

int pair_paced_publisher(void *arg)
{
	const struct paced *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 10000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[64];
	uint64_t seq = 0;

	if (!pub)
		return 2;
	for (int t = 0; t < p->ms; t += 10) {
		for (int i = 0; i < p->rate; i++) {
			th_msg_fill(msg, sizeof(msg), p->id, seq++);
			if (shmbus_publish(pub, msg, sizeof(msg)))
				return 3;
		}
		usleep(10000);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

void pair_assert_whole(const char *chan, int timeout_ms)
{
	pair_wait_caught_up(chan, 0, timeout_ms);
	pair_assert_identical(chan);
	pair_assert_no_gap(chan);
}

void pair_assert_no_gap(const char *chan)
{
	struct sb_repl_view v;

	host_view(&B, chan, &v);
	cr_assert_eq(v.gaps, 0, "%s: %llu gaps", chan,
		     (unsigned long long)v.gaps);
}

/* SIGSTOP, and wait until the kernel says the process is stopped. */
void host_pause(const struct host *h)
{
	char path[64], st[512];

	kill(h->pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)h->pid);
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(path, "r");
		char *p = NULL;

		if (f && fgets(st, sizeof(st), f))
			p = strrchr(st, ')');
		if (f)
			fclose(f);
		if (p && p[1] == ' ' && p[2] == 'T')
			return;
		usleep(1000);
	}
	cr_assert_fail("%c did not stop", h->tag);
}

