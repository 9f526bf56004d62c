/* SPDX-License-Identifier: MIT */
/*
 * daemon_fixture.c - a real shmbusd for the tests that need one
 * (test_daemon, test_access, test_protocol, test_repair): a private
 * directory with a config, the daemon started from $SHMBUSD and stopped
 * (its log checked for sanitizer reports), and the client processes the
 * tests fork.  See daemon_fixture.h.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"

struct daemon d;

const char *shmbusd_path(void)
{
	const char *p = getenv("SHMBUSD");

	return p && *p ? p : "build/shmbusd";
}

uint64_t bound_ns(void)
{
	return th_env_count("SHMBUS_REPAIR_BOUND_MS", 100) * 1000000u;
}

void write_conf(const char *body)
{
	FILE *f = fopen(d.conf, "w");

	cr_assert(f);
	/* A key is set once: a body that names its own shm_dir has it. */
	fprintf(f, "[bus]\nname = test\n");
	if (strncmp(body, "shm_dir =", 9) && !strstr(body, "\nshm_dir ="))
		fprintf(f, "shm_dir = %s\n", d.dir);
	fprintf(f, "socket = %s\nreap_interval_ms = 10\nlog_level = debug\n%s",
		d.sock, body);
	fclose(f);
}

pid_t spawn_daemon(void)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* A test that crashes or times out takes its daemon with it
		 * (the signal survives the exec). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(shmbusd_path(), "shmbusd", "-c", d.conf, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Starts the daemon and waits until it answers. */
void start_daemon(void)
{
	d.pid = spawn_daemon();
	for (int i = 0; i < 500; i++) {
		shmbus_bus *b = shmbus_connect(d.sock);

		if (b) {
			shmbus_disconnect(b);
			return;
		}
		cr_assert(waitpid(d.pid, NULL, WNOHANG) == 0,
			  "shmbusd exited at start (see %s)", d.log);
		usleep(10000);
	}
	cr_assert_fail("shmbusd did not come up");
}

void setup_with(const char *conf)
{
	snprintf(d.dir, sizeof(d.dir), "%s", th_mkdir());
	chmod(d.dir, 0755);	/* other users reach the socket */
	snprintf(d.conf, sizeof(d.conf), "%s/bus.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/bus.sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
	write_conf(conf);
	start_daemon();
}

static const char *const std_conf =
	"[defaults]\nsubscribe = *\n"
	"[channel blk]\ncapacity = 64K\nmax_msg = 1K\npolicy = block\n"
	"[channel mp]\ncapacity = 64K\nmax_msg = 1K\npolicy = block\n"
	"producers = multi\n"
	"[channel tiny]\ncapacity = 4K\nmax_msg = 256\npolicy = block\n"
	"[channel ow]\ncapacity = 16K\npolicy = overwrite\nproducers = multi\n"
	"numa_node = 0\n";

void setup(void)
{
	setup_with(std_conf);
}

bool log_has(const char *what);

/* Stops the daemon; under the sanitizers, its report (it writes to the
 * log) fails the test. */
void teardown(void)
{
	char what[256];

	if (d.pid > 0) {
		kill(d.pid, SIGTERM);
		if (th_wait(d.pid) != 0)
			th_fini_fail("shmbusd did not stop cleanly");
		d.pid = 0;
	}
	if (log_has("Sanitizer") || log_has("runtime error")) {
		snprintf(what, sizeof(what), "shmbusd: sanitizer report in %s",
			 d.log);
		th_fini_fail(what);
	}
	/* SHMBUS_TEST_KEEP=1: left for a look (the log, the files). */
	if (!getenv("SHMBUS_TEST_KEEP"))
		th_rmdir(d.dir);
}

bool log_has(const char *what)
{
	char buf[1 << 16];
	FILE *f = fopen(d.log, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, what) != NULL;
}

shmbus_channel *open_role(shmbus_bus **bus, const char *name,
				 enum shmbus_role role)
{
	shmbus_channel *ch;

	*bus = shmbus_connect(d.sock);
	if (!*bus)
		return NULL;
	ch = shmbus_bus_open(*bus, name, role);
	return ch;
}

/* ------------------------------------------------ children used below */


void say(int fd)
{
	cr_assert(write(fd, "x", 1) == 1);
}

void hear(int fd)
{
	char c;

	cr_assert(read(fd, &c, 1) == 1, "child gone");
}

void child_pipes(struct child *c)
{
	cr_assert(pipe(c->ready) == 0 && pipe(c->go) == 0);
}

/* Receives c->n self-checking messages, exactly once and in order. */
int subscriber(void *arg)
{
	struct child *c = arg;
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, c->name, SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint8_t buf[2048];
	uint64_t next = 0;

	if (!sub)
		return 2;
	if (write(c->ready[1], "x", 1) != 1)
		return 3;
	while (next < c->n) {
		struct shmbus_msg m;
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), &m);
		uint32_t id;
		uint64_t seq;

		if (len == -EAGAIN) {
			shmbus_wait(sub, 1000000000);
			continue;
		}
		if (len < 0)
			return 4;
		if (th_msg_check(buf, (size_t)len, &id, &seq) || seq != next) {
			fprintf(stderr, "subscriber: got %llu, expected %llu\n",
				(unsigned long long)seq,
				(unsigned long long)next);
			return 5;
		}
		next++;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* Publishes c->n self-checking messages, waiting when full. */
int publisher(void *arg)
{
	struct child *c = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, c->name, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t buf[256];

	if (!pub)
		return 2;
	if (write(c->ready[1], "x", 1) != 1)
		return 3;
	for (uint64_t s = 0; s < c->n; s++) {
		size_t len = TH_MSG_MIN + s % 100;

		th_msg_fill(buf, len, c->id, s);
		if (shmbus_publish(pub, buf, len))
			return 4;
		if (c->pace_us && s % 1000 == 999)
			usleep(c->pace_us);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* A multi producer that publishes `n` messages, then claims one more and
 * stops there for ever (until killed). */
int stuck_producer(void *arg)
{
	struct child *c = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, c->name, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t buf[64];
	void *slot;

	if (!pub)
		return 2;
	for (uint64_t s = 0; s < c->n; s++) {
		th_msg_fill(buf, 40, c->id, s);
		if (shmbus_publish(pub, buf, 40))
			return 3;
	}
	if (shmbus_claim(pub, 40, &slot))
		return 4;
	memset(slot, 0xee, 40);	/* half-written, never committed */
	say(c->ready[1]);
	hear(c->go[0]);		/* until killed, or told to commit */
	th_msg_fill(slot, 40, c->id, c->n);
	shmbus_commit(pub);
	return 0;
}

int prod_id_order(uint32_t id, uint64_t seq, uint64_t *next)
{
	if (seq != next[id])
		return -1;
	next[id]++;
	return 0;
}

/* Opens a subscriber on "tiny", says so, and never reads. */
int idle_subscriber(void *arg)
{
	struct child *c = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, c->name, SHMBUS_ROLE_SUBSCRIBE);

	if (!ch || !shmbus_sub_open(ch, NULL))
		return 2;
	say(c->ready[1]);
	pause();
	return 0;
}

int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.sock);
	cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}


uint64_t read_in_order(shmbus_sub *sub, uint64_t want, uint64_t *next)
{
	uint64_t start = th_now_ns(), first = 0;
	uint8_t buf[2048];

	for (uint64_t got = 0; got < want;) {
		ssize_t n = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (n == -EAGAIN) {
			cr_assert(th_now_ns() - start < 5000000000ull,
				  "no message for 5 s (%llu of %llu read)",
				  (unsigned long long)got,
				  (unsigned long long)want);
			continue;
		}
		if (!first)
			first = th_now_ns();
		cr_assert(n > 0, "read: %s", shmbus_strerror((int)n));
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0,
			     "torn message");
		cr_assert(id < 4, "producer id %u", id);
		cr_assert_eq(prod_id_order(id, seq, next), 0,
			     "producer %u: got %llu", id,
			     (unsigned long long)seq);
		got++;
	}
	return first;
}
