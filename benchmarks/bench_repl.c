/* SPDX-License-Identifier: MIT */
/*
 * bench_repl - replication between two hosts: two shmbusd, A primary and
 * B standby, each in its own network namespace joined by a veth pair
 * (as root; else both on the loopback).  Each figure has its baseline,
 * measured in the same run over the same link:
 *
 *   1. a 32-byte synchronous round trip, shmbus_publish() and
 *      shmbus_pub_sync() on a channel acknowledged at `applied`, against
 *      a raw TCP ping-pong of 32 bytes (TCP_NODELAY, both ends busy-poll);
 *   2. asynchronous streaming of 32-byte and 1 KiB messages, the bytes
 *      the standby applies per second, against a raw TCP stream from a
 *      cache-resident buffer and one going through as much memory as
 *      the backlog;
 *   3. a local 32-byte round trip (ping-pong between two processes on A)
 *      on replicated asynchronous channels against the same on channels
 *      that are not replicated, taking turns, with a second pair of
 *      channels that are not replicated for the noise between two pairs
 *      of rings alike.
 *
 *   bench_repl [-q]      -q: briefly (checks that it runs)
 *
 * For A/B runs: BENCH_REPL_SYNC_ONLY=1 measures only the round trips
 * (three rounds), BENCH_REPL_STREAM_ONLY=1 only the streaming (three
 * rounds), BENCH_REPL_LOCAL_ONLY=1 only the local round trips,
 * BENCH_REPL_NAP_US sets [replication] nap_us, SHMBUSD names the daemon
 * to run, BENCH_REPL_KEEP_LOGS=1 keeps
 * the daemons' logs in /tmp.  BENCH_REPL_CPUS_A and BENCH_REPL_CPUS_B give
 * each daemon's [replication] cpus (where its threads that move records
 * run); unset, the scheduler places them.
 *
 * The results go to benchmarks/results/replication.csv (not with -q).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "pingpong.h"
#include "shmbus.h"
#include "../lib/contract.h"
#include "shmbus/layout.h"

struct node {
	char tag;
	char ns[32], ip[32], listen[48], dir[96], conf[128], sock[108];
	char log[128], run[128], state[128];
	pid_t pid;
};

static struct node A = { .tag = 'a' }, B = { .tag = 'b' };
static bool netns;
static char key_path[128];
static const char *shmbusd = "build/shmbusd";

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static const char *stream_cap = "256M";

static const char CHANNELS[] =
	"[channel sync]\ncapacity = 4M\nmax_msg = 1K\nreplicate = applied\n"
	"[channel s32]\ncapacity = %s\nmax_msg = 1K\nreplicate = received\n"
	"[channel s1k]\ncapacity = %s\nmax_msg = 1K\nreplicate = received\n"
	"[channel s32l]\ncapacity = %s\nmax_msg = 1K\nreplicate = local\n"
	"[channel ping_r]\ncapacity = 1M\nmax_msg = 1K\nreplicate = local\n"
	"[channel pong_r]\ncapacity = 1M\nmax_msg = 1K\nreplicate = local\n"
	"[channel ping]\ncapacity = 1M\nmax_msg = 1K\n"
	"[channel pong]\ncapacity = 1M\nmax_msg = 1K\n"
	"[channel ping2]\ncapacity = 1M\nmax_msg = 1K\n"
	"[channel pong2]\ncapacity = 1M\nmax_msg = 1K\n";

static void node_setup(struct node *n, const char *role, const char *peer)
{
	int me = getpid();
	const char *cpus, *nap;
	FILE *f;

	snprintf(n->dir, sizeof(n->dir), "/dev/shm/shmbus-bench-repl%d-%c", me,
		 n->tag);
	snprintf(n->conf, sizeof(n->conf), "/tmp/shmbus-bench-repl%d-%c.conf",
		 me, n->tag);
	snprintf(n->log, sizeof(n->log), "/tmp/shmbus-bench-repl%d-%c.log", me,
		 n->tag);
	snprintf(n->run, sizeof(n->run), "/tmp/shmbus-bench-repl%d-%c.run", me,
		 n->tag);
	/* Beside the bus file the daemon writes, in the run directory that
	 * the end removes. */
	snprintf(n->sock, sizeof(n->sock), "%.97s/bus.sock", n->run);
	snprintf(n->state, sizeof(n->state), "/tmp/shmbus-bench-repl%d-%c.st",
		 me, n->tag);
	mkdir(n->run, 0700);
	f = fopen(n->conf, "w");
	if (!f)
		exit(1);
	cpus = getenv(n->tag == 'a' ? "BENCH_REPL_CPUS_A" : "BENCH_REPL_CPUS_B");
	nap = getenv("BENCH_REPL_NAP_US");
	fprintf(f, "[bus]\nname = brepl\nshm_dir = %s\nsocket = %s\n"
		"log_level = notice\n[replication]\nrole = %s\nlisten = %s\n"
		"peer = %s\nkey_file = %s\nstate_dir = %s\n"
		"sync_timeout_ms = 10000\n%s%s%s%s%s%s", n->dir, n->sock,
		role, n->listen, peer, key_path, n->state,
		cpus ? "cpus = " : "", cpus ? cpus : "", cpus ? "\n" : "",
		nap ? "nap_us = " : "", nap ? nap : "", nap ? "\n" : "");
	/* The streaming channels: 256M for a backlog of 192 MiB (16M
	 * briefly, as three of them are made on each side). */
	fprintf(f, CHANNELS, stream_cap, stream_cap, stream_cap);
	fclose(f);
}

static void node_start(struct node *n)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(n->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		setenv("SHMBUS_RUN_DIR", n->run, 1);
		if (n->ns[0])
			execlp("ip", "ip", "netns", "exec", n->ns, shmbusd,
			       "-c", n->conf, (char *)NULL);
		else
			execl(shmbusd, "shmbusd", "-c", n->conf, (char *)NULL);
		_exit(127);
	}
	n->pid = pid;
	for (int i = 0; i < 500; i++) {
		shmbus_bus *b = shmbus_connect_timeout(n->sock, 0);

		if (b) {
			shmbus_disconnect(b);
			return;
		}
		usleep(10000);
	}
	fprintf(stderr, "bench_repl: daemon %c does not start (%s)\n", n->tag,
		n->log);
	exit(1);
}

static void cleanup(void)
{
	for (struct node *n = &A; n; n = n == &A ? &B : NULL) {
		if (n->pid > 0) {
			kill(n->pid, SIGTERM);
			waitpid(n->pid, NULL, 0);
		}
		sh("rm -rf %s %s %s %s %s.lock %s %s 2>/dev/null", n->dir,
		   n->conf, n->sock, n->run, n->sock, n->state,
		   getenv("BENCH_REPL_KEEP_LOGS") ? "" : n->log);
	}
	if (netns)
		sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null",
		   A.ns, B.ns);
	unlink(key_path);
}

static void pair_up(void)
{
	int me = getpid(), fd;

	netns = geteuid() == 0 && sh("ip netns list >/dev/null 2>&1") == 0;
	if (netns) {
		snprintf(A.ns, sizeof(A.ns), "sbbencha%d", me);
		snprintf(B.ns, sizeof(B.ns), "sbbenchb%d", me);
		strcpy(A.ip, "10.198.0.1");
		strcpy(B.ip, "10.198.0.2");
		if (sh("ip netns add %s && ip netns add %s && "
		       "ip link add sbba%d type veth peer name sbbb%d && "
		       "ip link set sbba%d netns %s && ip link set sbbb%d netns %s && "
		       "ip -n %s addr add %s/24 dev sbba%d && "
		       "ip -n %s addr add %s/24 dev sbbb%d && "
		       "ip -n %s link set sbba%d up && ip -n %s link set sbbb%d up && "
		       "ip -n %s link set lo up && ip -n %s link set lo up",
		       A.ns, B.ns, me, me, me, A.ns, me, B.ns, A.ns, A.ip, me,
		       B.ns, B.ip, me, A.ns, me, B.ns, me, A.ns, B.ns)) {
			fprintf(stderr, "bench_repl: no network namespaces\n");
			exit(1);
		}
	} else {
		strcpy(A.ip, "127.0.0.1");
		strcpy(B.ip, "127.0.0.1");
	}
	snprintf(A.listen, sizeof(A.listen), "%s:%d", A.ip,
		 netns ? 7400 : 23000 + me % 10000);
	snprintf(B.listen, sizeof(B.listen), "%s:%d", B.ip,
		 netns ? 7400 : 33000 + me % 10000);
	snprintf(key_path, sizeof(key_path), "/tmp/shmbus-bench-repl%d.key", me);
	fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "a benchmark's key, 32 bytes long", 32) != 32)
		exit(1);
	close(fd);
	atexit(cleanup);
	node_setup(&A, "primary", B.listen);
	node_setup(&B, "standby", A.listen);
	node_start(&A);
	node_start(&B);
	/* Until every channel of B is linked (the log says so). */
	for (int i = 0; i < 500; i++) {
		char cmd[256];

		snprintf(cmd, sizeof(cmd), "[ $(grep -c 'linked to primary' %s) "
			 "-ge 5 ]", B.log);
		if (system(cmd) == 0)
			return;
		usleep(10000);
	}
	fprintf(stderr, "bench_repl: the standby does not link\n");
	exit(1);
}

/* Runs fn in a child in network namespace ns ("" here). */
static pid_t in_ns(const char *ns, int (*fn)(void *), void *arg)
{
	pid_t pid = bh_fork();

	if (pid == 0) {
		if (ns[0]) {
			char p[96];
			int fd;

			snprintf(p, sizeof(p), "/run/netns/%s", ns);
			fd = open(p, O_RDONLY);
			if (fd < 0 || setns(fd, CLONE_NEWNET))
				_exit(120);
		}
		_exit(fn(arg));
	}
	return pid;
}

static int wait_ok(pid_t pid)
{
	int st;

	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ------------------------------------------------------------ raw TCP */

struct tcpjob {
	int port;
	long n;			/* ping-pongs; 0: stream */
	double secs;		/* stream */
	int cpu;
	size_t span;		/* stream: the memory each side goes through
				 * (0: one 64 KiB buffer, cache-resident) */
	double *out;		/* shared: result */
	struct hist *h;		/* shared: ping-pong round trips */
};

/* A stream's side goes through `span` bytes of memory in chunks of up to
 * 256 KiB (a replication frame's most), or sends and receives one 64 KiB
 * buffer (span 0). */
#define SPAN_CHUNK	(256u << 10)

static uint8_t *span_buf(size_t span, char *small)
{
	uint8_t *m;

	if (!span)
		return (uint8_t *)small;
	m = malloc(span);
	if (!m)
		exit(1);
	memset(m, 1, span);	/* faulted in, as a ring in use is */
	return m;
}

static size_t span_chunk(size_t span, const uint8_t *mem, const uint8_t *at)
{
	size_t left = span ? span - (size_t)(at - mem) : 1 << 16;

	return left < SPAN_CHUNK ? left : SPAN_CHUNK;
}

static uint8_t *span_next(size_t span, uint8_t *mem, uint8_t *at, size_t n)
{
	if (!span)
		return mem;
	at += n;
	return at == mem + span ? mem : at;
}

static int tcp_server(void *arg)
{
	struct tcpjob *j = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)j->port) };
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0), c;
	static char buf[1 << 16];
	uint64_t t0 = 0, got = 0;

	bh_pin(j->cpu);
	inet_pton(AF_INET, B.ip, &sa.sin_addr);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1))
		return 2;
	c = accept(l, NULL, NULL);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (j->n) {
		for (long i = 0; i < j->n; i++) {
			size_t have = 0;

			while (have < 32) {	/* busy poll */
				ssize_t r = recv(c, buf + have, 32 - have,
						 MSG_DONTWAIT);

				if (r == 0)
					return 3;
				if (r > 0)
					have += (size_t)r;
			}
			if (send(c, buf, 32, 0) != 32)
				return 4;
		}
		return 0;
	}
	for (uint8_t *mem = span_buf(j->span, buf), *at = mem;;) {
		ssize_t r = recv(c, at, span_chunk(j->span, mem, at), 0);

		if (r <= 0)
			break;
		if (!t0)
			t0 = bh_now_ns();
		got += (uint64_t)r;
		at = span_next(j->span, mem, at, (size_t)r);
	}
	*j->out = (double)got / ((double)(bh_now_ns() - t0) / 1e9);
	return 0;
}

static int tcp_client(void *arg)
{
	struct tcpjob *j = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)j->port) };
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	static char buf[1 << 16];

	bh_pin(j->cpu);
	inet_pton(AF_INET, B.ip, &sa.sin_addr);
	for (int i = 0; connect(s, (struct sockaddr *)&sa, sizeof(sa)); i++) {
		if (i > 200)
			return 2;
		usleep(5000);
		close(s);
		s = socket(AF_INET, SOCK_STREAM, 0);
	}
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (j->n) {
		for (long i = 0; i < j->n; i++) {
			uint64_t t = bh_ticks();
			size_t have = 0;

			if (send(s, buf, 32, 0) != 32)
				return 3;
			while (have < 32) {
				ssize_t r = recv(s, buf + have, 32 - have,
						 MSG_DONTWAIT);

				if (r == 0)
					return 4;
				if (r > 0)
					have += (size_t)r;
			}
			hist_record(j->h, bh_ticks() - t);
		}
		return 0;
	}
	uint8_t *mem = span_buf(j->span, buf), *at = mem;

	for (uint64_t end = bh_now_ns() + (uint64_t)(j->secs * 1e9);
	     bh_now_ns() < end;) {
		ssize_t r = send(s, at, span_chunk(j->span, mem, at), 0);

		if (r < 0)
			return 5;
		at = span_next(j->span, mem, at, (size_t)r);
	}
	return 0;
}

static uint64_t tcp_pingpong_p50(long n, struct hist *h)
{
	struct tcpjob j = { .port = 7501, .n = n, .h = h };
	pid_t srv, cli;

	hist_init(h);
	j.cpu = 1;
	srv = in_ns(B.ns, tcp_server, &j);
	j.cpu = 0;
	cli = in_ns(A.ns, tcp_client, &j);
	if (wait_ok(cli) || wait_ok(srv)) {
		fprintf(stderr, "bench_repl: TCP ping-pong failed\n");
		exit(1);
	}
	return hist_percentile(h, 50);
}

static double tcp_stream(double secs, size_t span)
{
	double *out = bh_shared(sizeof(double));
	struct tcpjob j = { .port = 7502, .secs = secs, .span = span,
			    .out = out };
	pid_t srv, cli;

	j.cpu = 1;
	srv = in_ns(B.ns, tcp_server, &j);
	j.cpu = 0;
	cli = in_ns(A.ns, tcp_client, &j);
	if (wait_ok(cli) || wait_ok(srv)) {
		fprintf(stderr, "bench_repl: TCP stream failed\n");
		exit(1);
	}
	return *out;
}

/* ------------------------------------------------------------- shmbus */

static shmbus_pub *open_pub(shmbus_bus **bus, shmbus_channel **ch,
			    const char *name)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *p;

	*bus = shmbus_connect(A.sock);
	*ch = *bus ? shmbus_bus_open(*bus, name, SHMBUS_ROLE_PUBLISH) : NULL;
	p = *ch ? shmbus_pub_open(*ch, &pa) : NULL;
	if (!p) {
		fprintf(stderr, "bench_repl: %s: %s\n", name,
			shmbus_strerror(errno));
		exit(1);
	}
	return p;
}

struct syncjob {
	long n;
	struct hist *h;
};

static int sync_client(void *arg)
{
	struct syncjob *j = arg;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *p;
	char msg[32] = "a synchronous message";

	bh_pin(0);
	p = open_pub(&bus, &ch, "sync");
	/* Until the primary finds its standby in sync. */
	for (int k = 0; k < 500; k++) {
		struct sb_repl_view v;

		sb_repl_read(ch, &v);
		if (!(v.flags & SHMBUS_REPL_OUT_OF_SYNC))
			break;
		if (shmbus_publish(p, msg, sizeof(msg)))
			return 2;
		shmbus_pub_sync(p, 5000000000LL);
		usleep(10000);
	}
	for (long i = -j->n / 10; i < j->n; i++) {	/* warm up first */
		uint64_t t = bh_ticks();
		int rc = shmbus_publish(p, msg, sizeof(msg));

		if (!rc)
			rc = shmbus_pub_sync(p, 5000000000LL);
		if (rc) {
			struct sb_repl_view v;

			sb_repl_read(ch, &v);
			fprintf(stderr, "bench_repl: sync: %s (at %ld: flags %x, "
				"watermark %llu, applied %llu, head %llu)\n",
				rc > 0 ? "degraded" : shmbus_strerror(rc), i,
				v.flags, (unsigned long long)v.watermark,
				(unsigned long long)v.applied,
				(unsigned long long)v.head);
			return 2;
		}
		if (i >= 0)
			hist_record(j->h, bh_ticks() - t);
	}
	return 0;
}

static uint64_t sync_p50(long n, struct hist *h)
{
	struct syncjob j = { n, h };

	hist_init(h);
	if (wait_ok(in_ns("", sync_client, &j))) {
		fprintf(stderr, "bench_repl: sync round trips failed\n");
		exit(1);
	}
	return hist_percentile(h, 50);
}

static void stop_wait(pid_t pid)
{
	char path[64], st[512];

	kill(pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(path, "r");
		char *p = NULL;

		if (f && fgets(st, sizeof(st), f))
			p = strrchr(st, ')');
		if (f)
			fclose(f);
		if (p && p[2] == 'T')
			return;
		usleep(1000);
	}
}

/*
 * The rate of the replication pipeline alone: with A's daemon stopped (so
 * that nothing is shipped meanwhile, nor waits in the sockets' buffers),
 * a producer fills `bytes` of the ring; then A runs again, and the bytes
 * per second are those B applies until it holds all of it (A's agent
 * walks and ships, B's linker checks and applies: two threads, as the raw
 * TCP stream's two processes).
 */
static double repl_stream(const char *chan, size_t len, uint64_t bytes)
{
	shmbus_channel *a = shmbus_channel_open(A.dir, chan);
	shmbus_channel *b = shmbus_channel_open(B.dir, chan);
	uint64_t rec = 16 + (len + 7) / 8 * 8, t0, t1;
	struct sb_repl_view va, v0, v1;
	static char msg[1024];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	if (!a || !b)
		exit(1);
	p = open_pub(&bus, &ch, chan);
	stop_wait(A.pid);
	for (uint64_t k = 0; k < bytes / rec; k++)
		if (shmbus_publish(p, msg, len)) {
			fprintf(stderr, "bench_repl: %s stream failed\n",
				chan);
			exit(1);
		}
	sb_repl_read(a, &va);
	sb_repl_read(b, &v0);
	kill(A.pid, SIGCONT);
	t0 = bh_now_ns();
	/* Looks every 100 us, sleeping between: a spinning observer would
	 * take one of the two CPUs from the pipeline it measures. */
	for (;;) {
		sb_repl_read(b, &v1);
		if (v1.head >= va.head || bh_now_ns() - t0 > 30000000000ull)
			break;
		usleep(100);
	}
	t1 = bh_now_ns();
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	shmbus_channel_close(a);
	shmbus_channel_close(b);
	return (double)(v1.head - v0.head) / ((double)(t1 - t0) / 1e9);
}

/*
 * One round of the streaming benchmark: raw TCP from and into one 64 KiB
 * buffer each side (cache-resident), raw TCP going through `bytes` of
 * memory each side as the replication does (the backlog is read from a
 * ring of its size and written into another), and the replication of a
 * backlog of `bytes` of 32-byte and of 1 KiB messages (level received),
 * and of 32-byte messages at level local.  st: those five, in bytes per
 * second.
 */
static void stream_round(double secs, uint64_t bytes, double st[5])
{
	st[0] = tcp_stream(secs, 0);
	st[1] = tcp_stream(secs, bytes);
	st[2] = repl_stream("s32", 32, bytes);
	st[3] = repl_stream("s1k", 1024, bytes);
	st[4] = repl_stream("s32l", 32, bytes);
	printf("streaming, bytes per second: raw TCP %.0f MB/s, through %"
	       PRIu64 " MiB of memory each side %.0f MB/s; replication of a "
	       "backlog of %" PRIu64 " MiB: 32 B messages %.0f MB/s of ring "
	       "(%.0f%% of TCP through memory, %.0f%% of TCP; %.2f M msg/s), "
	       "1 KiB %.0f MB/s (%.0f%%, %.0f%%); 32 B at level local %.0f "
	       "MB/s (%.0f%%, %.0f%%)\n", st[0] / 1e6, bytes >> 20,
	       st[1] / 1e6, bytes >> 20, st[2] / 1e6, 100 * st[2] / st[1],
	       100 * st[2] / st[0], st[2] / 48 / 1e6, st[3] / 1e6,
	       100 * st[3] / st[1], 100 * st[3] / st[0], st[4] / 1e6,
	       100 * st[4] / st[1], 100 * st[4] / st[0]);
}

/* A first lap unmeasured: the standby's ring pages are touched for the
 * first time there (page faults a ring in use no longer takes). */
static void stream_warm_up(uint64_t bytes)
{
	repl_stream("s32", 32, bytes);
	repl_stream("s1k", 1024, bytes);
	repl_stream("s32l", 32, bytes);
}

/* The p50 of n local round trips on ping/pong, in ns (pingpong.h). */
static double local_p50(const char *ping, const char *pong, long n,
			struct hist *h)
{
	int rc = bp_pingpong(A.sock, ping, pong, n, h);

	if (rc) {
		fprintf(stderr, "bench_repl: local ping-pong on %s/%s failed "
			"(%d)\n", ping, pong, rc);
		exit(1);
	}
	return hist_percentile_step(h, 50, bh_clock_step_ns());
}

/*
 * The local round trip on the replicated channels and on the others,
 * taking turns LOCAL_TURNS times, n round trips each: each turn's p50 and
 * ratio, then the median ratio (the turns move by a few percent, as much
 * as the target allows).  loc and rep get the p50s, in ticks, sorted.
 */
#define LOCAL_TURNS 9

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void local_turns(long n, double loc[LOCAL_TURNS],
			double rep[LOCAL_TURNS])
{
	struct hist *h = bh_shared(sizeof(*h));
	double r[LOCAL_TURNS], aa[LOCAL_TURNS];

	for (int k = 0; k < LOCAL_TURNS; k++) {
		double other;

		loc[k] = local_p50("ping", "pong", n, h);
		rep[k] = local_p50("ping_r", "pong_r", n, h);
		other = local_p50("ping2", "pong2", n, h);
		r[k] = rep[k] / loc[k];
		aa[k] = other / loc[k];
		printf("local 32 B round trip, p50, turn %d: not replicated "
		       "%.0f ns, replicated (async) %.0f ns: %.3fx; another "
		       "pair not replicated %.0f ns: %.3fx\n", k + 1, loc[k],
		       rep[k], r[k], other, aa[k]);
	}
	qsort(r, LOCAL_TURNS, sizeof(r[0]), cmp_dbl);
	qsort(aa, LOCAL_TURNS, sizeof(aa[0]), cmp_dbl);
	qsort(loc, LOCAL_TURNS, sizeof(loc[0]), cmp_dbl);
	qsort(rep, LOCAL_TURNS, sizeof(rep[0]), cmp_dbl);
	printf("local 32 B round trip, replicated against not: median %.3fx "
	       "(%.3f-%.3fx) over %d turns of %ld; another pair not "
	       "replicated against the first, the same way: %.3fx "
	       "(%.3f-%.3fx)\n", r[LOCAL_TURNS / 2], r[0], r[LOCAL_TURNS - 1],
	       LOCAL_TURNS, n, aa[LOCAL_TURNS / 2], aa[0],
	       aa[LOCAL_TURNS - 1]);
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && !strcmp(argv[1], "-q");
	long n = quick ? 2000 : 20000;
	double secs = quick ? 0.5 : 2.0, tps = bh_ns_per_tick();
	struct hist *h = bh_shared(sizeof(*h));
	const char *e = getenv("SHMBUSD");
	uint64_t tcp, syn;
	double loc[LOCAL_TURNS], rep[LOCAL_TURNS];
	double st[5];
	FILE *csv;

	if (e && *e)
		shmbusd = e;
	if (quick)
		stream_cap = "16M";
	if (getenv("BENCH_REPL_SYNC_ONLY")) {
		signal(SIGPIPE, SIG_IGN);
		bh_calibrate();
		pair_up();
		for (int k = 0; k < 3; k++) {
			uint64_t t = tcp_pingpong_p50(n, h), s = sync_p50(n, h);

			printf("sync %.1f us, tcp %.1f us: %.2fx\n",
			       (double)s * bh_ns_per_tick() / 1e3,
			       (double)t * bh_ns_per_tick() / 1e3,
			       (double)s / (double)t);
		}
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	bh_calibrate();
	tps = bh_ns_per_tick();
	pair_up();
	printf("bench_repl: two hosts as %s\n", netns ?
	       "network namespaces joined by a veth pair" :
	       "two daemons on the loopback (not root)");

	if (getenv("BENCH_REPL_LOCAL_ONLY")) {
		local_turns(quick ? 2000 : 100000, loc, rep);
		return 0;
	}
	if (getenv("BENCH_REPL_STREAM_ONLY")) {
		stream_warm_up(250u << 20);
		for (int k = 0; k < 3; k++)
			stream_round(secs, 192u << 20, st);
		return 0;
	}
	tcp = tcp_pingpong_p50(n, h);
	syn = sync_p50(n, h);
	printf("32 B round trip, p50: publish + pub_sync(applied) %.1f us, "
	       "raw TCP ping-pong %.1f us: %.2fx\n", (double)syn * tps / 1e3,
	       (double)tcp * tps / 1e3, (double)syn / (double)tcp);

	stream_warm_up(quick ? 8u << 20 : 250u << 20);
	stream_round(secs, quick ? 8u << 20 : 192u << 20, st);

	local_turns(quick ? 2000 : 100000, loc, rep);
	mkdir("benchmarks/results", 0755);
	csv = quick ? NULL : fopen("benchmarks/results/replication.csv", "w");
	if (csv) {
		fprintf(csv, "link,sync_p50_ns,tcp_pingpong_p50_ns,tcp_stream_Bps,"
			"tcp_stream_mem_Bps,repl_32_Bps,repl_1k_Bps,"
			"repl_32_local_Bps,local_p50_ns,"
			"local_replicated_p50_ns\n");
		fprintf(csv, "%s,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,"
			"%.0f\n", netns ? "netns" : "loopback",
			(double)syn * tps, (double)tcp * tps, st[0], st[1],
			st[2], st[3], st[4],
			loc[LOCAL_TURNS / 2], rep[LOCAL_TURNS / 2]);
		fclose(csv);
	}
	return 0;
}
