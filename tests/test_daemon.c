/* SPDX-License-Identifier: MIT */
/*
 * test_daemon.c - a real shmbusd in a private directory, real client
 * processes, real kill -9.
 *
 * Each test writes a config, starts build/shmbusd ($SHMBUSD) on it, and
 * talks to it through the library or through a raw socket.  Publishers and
 * subscribers are forked processes that connect on their own.  The repair
 * bound (100 ms, SHMBUS_REPAIR_BOUND_MS) is the daemon's promise, checked
 * from the moment of the kill.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "shmbus/protocol.h"

struct daemon {
	char dir[64];
	char conf[128];
	char sock[100];
	char log[128];
	pid_t pid;
};

static struct daemon d;

static const char *shmbusd_path(void)
{
	const char *p = getenv("SHMBUSD");

	return p && *p ? p : "build/shmbusd";
}

static uint64_t bound_ns(void)
{
	return th_env_count("SHMBUS_REPAIR_BOUND_MS", 100) * 1000000u;
}

static void write_conf(const char *body)
{
	FILE *f = fopen(d.conf, "w");

	cr_assert(f);
	fprintf(f, "[bus]\nname = test\nshm_dir = %s\nsocket = %s\n"
		   "reap_interval_ms = 10\nlog_level = debug\n%s",
		d.dir, d.sock, body);
	fclose(f);
}

static pid_t spawn_daemon(void)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 1);
		dup2(fd, 2);
		execl(shmbusd_path(), "shmbusd", "-c", d.conf, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Starts the daemon and waits until it answers. */
static void start_daemon(void)
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

static void setup_with(const char *conf)
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

static void setup(void)
{
	setup_with(std_conf);
}

static bool log_has(const char *what);

/* Stops the daemon; under the sanitizers, its report (it writes to the
 * log) fails the test. */
static void teardown(void)
{
	if (d.pid > 0) {
		kill(d.pid, SIGTERM);
		cr_expect_eq(th_wait(d.pid), 0, "shmbusd did not stop cleanly");
		d.pid = 0;
	}
	cr_expect(!log_has("Sanitizer") && !log_has("runtime error"),
		  "shmbusd: sanitizer report in %s", d.log);
	th_rmdir(d.dir);
}

static bool log_has(const char *what)
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

static shmbus_channel *open_role(shmbus_bus **bus, const char *name,
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

struct child {
	const char *name;	/* channel */
	uint64_t n;		/* messages */
	unsigned pace_us;	/* publisher: pause after every 1000 */
	uint32_t id;
	int ready[2];		/* child -> parent */
	int go[2];		/* parent -> child */
};

static void say(int fd)
{
	cr_assert(write(fd, "x", 1) == 1);
}

static void hear(int fd)
{
	char c;

	cr_assert(read(fd, &c, 1) == 1, "child gone");
}

static void child_pipes(struct child *c)
{
	cr_assert(pipe(c->ready) == 0 && pipe(c->go) == 0);
}

/* Receives c->n self-checking messages, exactly once and in order. */
static int subscriber(void *arg)
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
static int publisher(void *arg)
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

/* ------------------------------------------------------------- tests */

static int count_rows(const struct shmbus_bus_channel *c, void *arg)
{
	(void)c;
	++*(int *)arg;
	return 0;
}

Test(daemon, publish_subscribe_list_describe, .init = setup,
     .fini = teardown)
{
	struct child c = { .name = "blk", .n = 20000, .id = 1 };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus = shmbus_connect(d.sock);
	pid_t s, p;
	int rows = 0;

	cr_assert(bus);
	child_pipes(&c);
	cr_assert_eq(shmbus_bus_list(bus, count_rows, &rows), 4);
	cr_assert_eq(rows, 4);
	cr_assert_eq(shmbus_bus_describe(bus, "nope", &bc), -ENOENT);

	s = th_spawn(subscriber, &c);
	hear(c.ready[0]);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.subscribers, 1);
	cr_assert_eq(bc.clients, 1);
	cr_assert_eq(bc.published, 0);
	cr_assert_eq(bc.capacity, 65536);
	cr_assert_eq(bc.max_msg, 1024);
	cr_assert_eq(bc.policy, SHMBUS_BLOCK);
	cr_assert_eq(bc.configured, 1);
	cr_assert_str_eq(bc.subscribe, "*");
	cr_assert_eq(bc.numa_node, -1);
	cr_assert_eq(shmbus_bus_describe(bus, "ow", &bc), 0);
	cr_assert_eq(bc.numa_node, 0, "the configured NUMA node");
	cr_assert_eq(bc.policy, SHMBUS_OVERWRITE);
	cr_assert_eq(bc.producers, SHMBUS_MULTI_PRODUCER);

	p = th_spawn(publisher, &c);
	cr_assert_eq(th_wait(p), 0);
	cr_assert_eq(th_wait(s), 0);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.published, 20000);
	cr_assert_eq(bc.subscribers, 0);
	cr_assert_eq(bc.producers_active, 0);

	/* A channel outlives the connection it was opened on. */
	{
		shmbus_bus *b2 = shmbus_connect(d.sock);
		shmbus_channel *ch = shmbus_bus_open(b2, "blk",
						     SHMBUS_ROLE_PUBLISH);
		shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;

		cr_assert(pub);
		shmbus_disconnect(b2);
		cr_assert_eq(shmbus_publish(pub, "after", 5), 0);
		shmbus_pub_close(pub);
		shmbus_channel_close(ch);
	}
	/* Create, then delete, at run time. */
	{
		struct shmbus_channel_attr a;

		shmbus_channel_attr_init(&a);
		a.capacity = 8192;
		a.max_msg = 100;
		cr_assert_eq(shmbus_bus_create(bus, "dyn", &a), 0);
		cr_assert_eq(shmbus_bus_create(bus, "dyn", &a), -EEXIST);
		cr_assert_eq(shmbus_bus_describe(bus, "dyn", &bc), 0);
		cr_assert_eq(bc.capacity, 8192);
		cr_assert_eq(bc.configured, 0);
		a.capacity = 1000;
		cr_assert_eq(shmbus_bus_create(bus, "bad", &a), -EINVAL);
		cr_assert_eq(shmbus_bus_delete(bus, "dyn"), 0);
		cr_assert_eq(shmbus_bus_delete(bus, "dyn"), -ENOENT);
		cr_assert_eq(access("dyn", F_OK), -1);
	}
	shmbus_disconnect(bus);
}

static int grab_pointer(const struct shmbus_msg *m, void *arg)
{
	*(const void **)arg = m->data;
	return 1;
}

/* A subscriber that writes into a message it received. */
static int write_into_data(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub;
	const void *data = NULL;

	(void)arg;
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	if (!sub)
		return 2;
	if (shmbus_pub_open(ch, NULL) || errno != EPERM)
		return 3;
	if (shmbus_wait(sub, 5000000000) ||
	    shmbus_poll(sub, grab_pointer, &data, 1) != 1)
		return 4;
	/* Die by the signal itself, not by a sanitizer's SEGV handler. */
	signal(SIGSEGV, SIG_DFL);
	((volatile uint8_t *)data)[0] = 0xff;	/* must fault */
	return 0;
}

Test(daemon, subscriber_data_mapping_is_read_only, .init = setup,
     .fini = teardown)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	pid_t s;

	cr_assert(pub, "%s", shmbus_strerror(errno));
	cr_assert_null(shmbus_sub_open(ch, NULL));
	cr_assert_eq(errno, EPERM);
	s = th_spawn(write_into_data, NULL);
	usleep(100000);
	cr_assert_eq(shmbus_publish(pub, "intact", 6), 0);
	cr_assert_eq(th_wait(s), 128 + SIGSEGV,
		     "a subscriber wrote into the message data");
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

static int raw_connect(void);

/* OPEN by hand, keeping the descriptors the library would close. */
static int raw_open(const char *name, uint32_t role, int fds[2])
{
	struct {
		struct shmbus_ctl_hdr h;
		struct shmbus_ctl_open o;
	} req = { .h = { .magic = SHMBUS_CTL_MAGIC,
			 .version = SHMBUS_CTL_VERSION,
			 .type = SHMBUS_CTL_OPEN, .id = 1,
			 .len = sizeof(struct shmbus_ctl_open) },
		  .o = { .role = role } };
	struct shmbus_ctl_hdr rep;
	struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
	union {
		struct cmsghdr c;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	int fd = raw_connect();

	strcpy(req.o.name, name);
	if (send(fd, &req, sizeof(req), 0) != (ssize_t)sizeof(req) ||
	    recvmsg(fd, &m, 0) != (ssize_t)sizeof(rep) || rep.status)
		return -1;
	c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(2 * sizeof(int)))
		return -1;
	memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
	close(fd);
	return 0;
}

/* A hostile subscriber: it holds the data file's descriptor and tries
 * every way to write through it. */
static int hostile_subscriber(void)
{
	char path[64];
	void *p;
	int fds[2], fd;

	if (raw_open("mine", SHMBUS_CTL_ROLE_SUB, fds))
		return 20;
	if ((fcntl(fds[1], F_GETFL) & O_ACCMODE) != O_RDONLY)
		return 21;
	p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	if (p != MAP_FAILED || errno != EACCES)
		return 22;
	p = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fds[1], 0);
	if (p == MAP_FAILED)
		return 23;
	if (mprotect(p, 8192, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
		return 24;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[1]);
	fd = open(path, O_RDWR);
	if (fd >= 0 || errno != EACCES)
		return 25;
	if (write(fds[1], "x", 1) >= 0 || ftruncate(fds[1], 0) == 0)
		return 26;
	return 0;
}

static int as_nobody(void *arg)
{
	const char *dir = arg;
	shmbus_bus *bus;
	shmbus_channel *ch;
	struct shmbus_channel_attr a;

	if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
	    setresuid(65534, 65534, 65534))
		return 10;
	bus = shmbus_connect(d.sock);
	if (!bus)
		return 11;
	/* Denied: publish on "mine" (rule: none), subscribe on "root". */
	if (shmbus_bus_open(bus, "mine", SHMBUS_ROLE_PUBLISH) ||
	    errno != EACCES)
		return 12;
	if (shmbus_bus_open(bus, "root", SHMBUS_ROLE_SUBSCRIBE) ||
	    errno != EACCES)
		return 13;
	shmbus_channel_attr_init(&a);
	if (shmbus_bus_create(bus, "x", &a) != -EACCES ||
	    shmbus_bus_delete(bus, "mine") != -EACCES)
		return 14;
	/* The file itself is the daemon's, mode 0600: only the passed
	 * descriptor gives access. */
	if (shmbus_channel_open(dir, "mine") || errno != EACCES)
		return 15;
	/* Allowed: subscribe on "mine" (rule: uid:65534). */
	ch = shmbus_bus_open(bus, "mine", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch || !shmbus_sub_open(ch, NULL))
		return 16;
	/* Allowed by group: publish on "grp" (rule: gid:65534). */
	ch = shmbus_bus_open(bus, "grp", SHMBUS_ROLE_PUBLISH);
	if (!ch || !shmbus_pub_open(ch, NULL))
		return 17;
	return hostile_subscriber();
}

Test(daemon, access_control_by_uid_and_gid, .fini = teardown)
{
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run a client as uid 65534");
	setup_with("[channel mine]\ncapacity = 8K\nmax_msg = 100\n"
		   "publish = none\nsubscribe = uid:65534\n"
		   "[channel root]\ncapacity = 8K\nmax_msg = 100\n"
		   "subscribe = uid:0\n"
		   "[channel grp]\ncapacity = 8K\nmax_msg = 100\n"
		   "publish = gid:65534\n");
	rc = th_wait(th_spawn(as_nobody, d.dir));
	cr_assert_eq(rc, 0, "as_nobody() returned %d", rc);
	cr_assert(log_has("pid"));
	cr_assert(log_has("may not publish"));
}

/* A multi producer that publishes `n` messages, then claims one more and
 * stops there for ever (until killed). */
static int stuck_producer(void *arg)
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

static int prod_id_order(uint32_t id, uint64_t seq, uint64_t *next)
{
	if (seq != next[id])
		return -1;
	next[id]++;
	return 0;
}

Test(daemon, killed_producer_claim_is_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "mp", .n = 50, .id = 1 };
	struct child b = { .name = "mp", .n = 500, .id = 2 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint64_t next[3] = { 0 }, got = 0, t0, waited;
	uint8_t buf[2048];
	pid_t pa, pb;

	cr_assert(sub);
	child_pipes(&a);
	child_pipes(&b);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	/* B's messages all land behind A's open claim. */
	pb = th_spawn(publisher, &b);
	hear(b.ready[0]);
	cr_assert_eq(th_wait(pb), 0);
	for (int i = 0; i < 200; i++) {
		ssize_t n = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (n == -EAGAIN) {
			usleep(1000);
			continue;
		}
		cr_assert(n > 0);
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(prod_id_order(id, seq, next), 0);
		got++;
	}
	cr_assert_eq(got, 50, "only A's committed messages come before its "
		     "claim");

	t0 = th_now_ns();
	kill(pa, SIGKILL);
	for (;;) {
		ssize_t n = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (n == -EAGAIN) {
			cr_assert(th_now_ns() - t0 < 5000000000ull,
				  "subscribers never resumed");
			continue;
		}
		cr_assert(n > 0);
		if (got == 50) {
			waited = th_now_ns() - t0;
			cr_log_info("subscribers resumed %llu us after the kill",
				    (unsigned long long)(waited / 1000));
			cr_assert(waited <= bound_ns(), "resumed after %llu ms",
				  (unsigned long long)(waited / 1000000));
		}
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(prod_id_order(id, seq, next), 0);
		if (++got == 550)
			break;
	}
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	cr_assert_eq(shmbus_bus_describe(bus, "mp", &bc), 0);
	cr_assert_eq(bc.repairs, 1);
	cr_assert_geq(bc.reaped, 1);
	cr_assert(log_has("its unfinished claim padded"));
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(daemon, killed_single_producer_claim_is_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "blk", .n = 50, .id = 1 };
	struct child b = { .name = "blk", .n = 100, .id = 2 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint64_t next[3] = { 0 }, got = 0, t0, repaired;
	uint8_t buf[2048];
	pid_t pa, pb;

	cr_assert(sub);
	child_pipes(&a);
	child_pipes(&b);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	t0 = th_now_ns();
	kill(pa, SIGKILL);
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	/* shmbusd pads the claim and frees the producer role by itself,
	 * before any new producer comes. */
	for (;;) {
		cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
		if (bc.repairs == 1 && bc.producers_active == 0)
			break;
		cr_assert(th_now_ns() - t0 < bound_ns(),
			  "single producer not repaired");
		usleep(1000);
	}
	repaired = th_now_ns() - t0;
	/* A new producer takes the role at once and goes on. */
	pb = th_spawn(publisher, &b);
	hear(b.ready[0]);
	while (got < 150) {
		ssize_t n = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (n == -EAGAIN) {
			cr_assert(th_now_ns() - t0 < 5000000000ull, "stalled");
			usleep(100);
			continue;
		}
		cr_assert(n > 0);
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(prod_id_order(id, seq, next), 0);
		got++;
	}
	cr_assert_eq(th_wait(pb), 0);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.repairs, 1, "repaired twice");
	cr_assert(log_has("padded the unfinished claim of dead producer"));
	/* Logged only now: Criterion's logging wakes its own threads, and a
	 * fork() must not copy them in the middle of an allocation. */
	cr_log_info("single producer repaired %llu us after the kill",
		    (unsigned long long)(repaired / 1000));
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* Opens a subscriber on "tiny", says so, and never reads. */
static int idle_subscriber(void *arg)
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

Test(daemon, killed_subscriber_releases_producer, .init = setup,
     .fini = teardown)
{
	struct child c = { .name = "tiny" };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "tiny", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	struct shmbus_channel_info in;
	uint8_t buf[200] = { 0 };
	uint64_t t0, waited;
	pid_t s;
	int n = 0, rc;

	cr_assert(pub);
	child_pipes(&c);
	s = th_spawn(idle_subscriber, &c);
	hear(c.ready[0]);
	while ((rc = shmbus_publish(pub, buf, sizeof(buf))) == 0)
		n++;
	cr_assert_eq(rc, -EAGAIN, "the ring is full: back-pressure");
	cr_assert_gt(n, 10);
	usleep(50000);	/* the live subscriber is never released */
	cr_assert_eq(shmbus_publish(pub, buf, sizeof(buf)), -EAGAIN);

	t0 = th_now_ns();
	kill(s, SIGKILL);
	while (shmbus_publish(pub, buf, sizeof(buf)) == -EAGAIN)
		cr_assert(th_now_ns() - t0 < 5000000000ull, "never released");
	waited = th_now_ns() - t0;
	cr_log_info("the producer resumed %llu us after the kill",
		    (unsigned long long)(waited / 1000));
	cr_assert(waited <= bound_ns(), "resumed after %llu ms",
		  (unsigned long long)(waited / 1000000));
	cr_assert_eq(th_wait(s), 128 + SIGKILL);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.subscribers, 0);
	cr_assert_eq(in.reaped, 1);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(daemon, stopped_producer_is_never_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "mp", .n = 0, .id = 7 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_channel_info in;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint8_t buf[256];
	uint32_t id;
	uint64_t seq;
	ssize_t n;
	pid_t pa;

	cr_assert(sub);
	child_pipes(&a);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	kill(pa, SIGSTOP);
	usleep(300000);		/* many reaper intervals */
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.repairs, 0, "a stopped producer was repaired");
	cr_assert_eq(in.reaped, 0);
	cr_assert_eq(in.producers_active, 1);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);
	kill(pa, SIGCONT);
	say(a.go[1]);
	while ((n = shmbus_read(sub, buf, sizeof(buf), NULL)) == -EAGAIN)
		usleep(1000);
	cr_assert_eq(n, 40);
	cr_assert_eq(th_msg_check(buf, 40, &id, &seq), 0, "torn message");
	cr_assert_eq(id, 7);
	cr_assert_eq(th_wait(pa), 0);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.repairs, 0);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(daemon, daemon_killed_during_traffic, .init = setup, .fini = teardown,
     .timeout = 120)
{
	struct child c = { .name = "blk", .id = 3, .pace_us = 1000 };
	struct shmbus_channel_info in;
	struct shmbus_bus_channel bc;
	shmbus_channel *ro;
	struct child idle = { .name = "tiny" };
	shmbus_bus *bus;
	pid_t s, p, i;
	int tries;

	c.n = th_env_count("SHMBUS_RESTART_N", 1000000);
	child_pipes(&c);
	/* A client that will die after the restart: the new daemon must
	 * know it from its re-registration. */
	child_pipes(&idle);
	i = th_spawn(idle_subscriber, &idle);
	hear(idle.ready[0]);
	s = th_spawn(subscriber, &c);
	hear(c.ready[0]);
	p = th_spawn(publisher, &c);
	hear(c.ready[0]);
	usleep(50000);
	kill(d.pid, SIGKILL);
	cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
	ro = shmbus_channel_open_ro(d.dir, "blk");
	cr_assert(ro);
	shmbus_channel_info(ro, &in);
	cr_log_info("daemon killed after %llu of %llu messages",
		    (unsigned long long)in.published,
		    (unsigned long long)c.n);
	cr_assert_lt(in.published, c.n, "the traffic ended before the kill");
	usleep(100000);		/* traffic flows without a daemon */
	start_daemon();
	cr_assert(log_has("blk: adopted"));
	/* Both clients re-register with the new daemon on their own. */
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	for (tries = 0; tries < 200; tries++) {
		struct shmbus_bus_channel tiny;

		if (shmbus_bus_describe(bus, "blk", &bc) == 0 &&
		    bc.clients == 2 &&
		    shmbus_bus_describe(bus, "tiny", &tiny) == 0 &&
		    tiny.clients == 1)
			break;
		usleep(10000);
	}
	cr_assert_eq(bc.clients, 2, "clients did not re-attach");
	shmbus_channel_info(ro, &in);
	cr_assert_lt(in.published, c.n, "re-attached only after the traffic");
	shmbus_channel_close(ro);
	cr_assert_eq(th_wait(p), 0);
	cr_assert_eq(th_wait(s), 0, "lost, duplicated or torn messages");
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.published, c.n);

	/* Crash repair works with the new daemon for a re-registered client:
	 * its connection closing is noticed at once. */
	{
		uint64_t t0 = th_now_ns();

		kill(i, SIGKILL);
		for (;;) {
			shmbus_bus_describe(bus, "tiny", &bc);
			if (bc.subscribers == 0)
				break;
			cr_assert(th_now_ns() - t0 < bound_ns(),
				  "slot not released after the restart");
			usleep(1000);
		}
		cr_assert_eq(bc.reaped, 1);
		cr_assert_eq(th_wait(i), 128 + SIGKILL);
	}
	shmbus_disconnect(bus);
}

/* ------------------------------------------------------ the protocol */

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.sock);
	cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	return fd;
}

/* Sends raw bytes; returns the reply's status (or 1 if none came). */
static int raw_call(int fd, const void *buf, size_t len)
{
	struct shmbus_ctl_hdr h;
	uint8_t rep[SHMBUS_CTL_MAX];
	struct timeval tv = { .tv_sec = 2 };
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(send(fd, buf, len, 0), (ssize_t)len);
	n = recv(fd, rep, sizeof(rep), 0);
	if (n < (ssize_t)sizeof(h))
		return 1;
	memcpy(&h, rep, sizeof(h));
	cr_assert_eq(h.magic, SHMBUS_CTL_MAGIC);
	return h.status;
}

static void hdr(uint8_t *buf, uint16_t type, uint32_t len)
{
	struct shmbus_ctl_hdr h = {
		.magic = SHMBUS_CTL_MAGIC, .version = SHMBUS_CTL_VERSION,
		.type = type, .id = 9, .len = len,
	};

	memcpy(buf, &h, sizeof(h));
}

Test(daemon, malformed_requests_get_errors, .init = setup, .fini = teardown)
{
	static uint8_t buf[70000];
	struct shmbus_ctl_open op = { .role = SHMBUS_CTL_ROLE_SUB };
	const size_t H = sizeof(struct shmbus_ctl_hdr);
	int fd = raw_connect(), rows = 0;
	shmbus_bus *bus;
	unsigned seed = 42;

	/* Random bytes of many lengths. */
	for (int i = 0; i < 300; i++) {
		size_t len = 1 + (size_t)rand_r(&seed) % 600;

		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rand_r(&seed);
		cr_assert_lt(raw_call(fd, buf, len), 0);
	}
	/* Truncated: less than a header. */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	cr_assert_eq(raw_call(fd, buf, 10), -EBADMSG);
	/* Oversized: more than the protocol allows. */
	hdr(buf, SHMBUS_CTL_LIST, sizeof(buf) - H);
	cr_assert_eq(raw_call(fd, buf, sizeof(buf)), -EMSGSIZE);
	/* Wrong version, wrong magic. */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	((struct shmbus_ctl_hdr *)buf)->version = 99;
	cr_assert_eq(raw_call(fd, buf, H), -EPROTONOSUPPORT);
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	((struct shmbus_ctl_hdr *)buf)->magic = 0x12345678;
	cr_assert_eq(raw_call(fd, buf, H), -EPROTO);
	/* The header's length disagrees with the datagram. */
	hdr(buf, SHMBUS_CTL_OPEN, 1000);
	cr_assert_eq(raw_call(fd, buf, H + 10), -EBADMSG);
	/* A body of the wrong size for its type. */
	hdr(buf, SHMBUS_CTL_OPEN, 10);
	cr_assert_eq(raw_call(fd, buf, H + 10), -EBADMSG);
	/* A name without its NUL, a path in a name, an unknown role. */
	memset(op.name, 'a', sizeof(op.name));
	hdr(buf, SHMBUS_CTL_OPEN, sizeof(op));
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	memset(op.name, 0, sizeof(op.name));
	strcpy(op.name, "../../etc/passwd");
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	strcpy(op.name, "blk");
	op.role = 77;
	memcpy(buf + H, &op, sizeof(op));
	cr_assert_eq(raw_call(fd, buf, H + sizeof(op)), -EINVAL);
	/* An unknown request type. */
	hdr(buf, 0x7777, 0);
	cr_assert_eq(raw_call(fd, buf, H), -EOPNOTSUPP);
	/* The same connection still works. */
	hdr(buf, SHMBUS_CTL_HELLO, 0);
	cr_assert_eq(raw_call(fd, buf, H), 0);
	close(fd);

	/* And the daemon serves everyone else. */
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0, "shmbusd died");
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	cr_assert_eq(shmbus_bus_list(bus, count_rows, &rows), 4);
	shmbus_disconnect(bus);
	cr_assert(log_has("bad magic"));
	cr_assert(log_has("oversized request"));
}

Test(daemon, second_daemon_refuses, .init = setup, .fini = teardown)
{
	pid_t p = spawn_daemon();

	cr_assert_eq(th_wait(p), 1);
	cr_assert(log_has("already served by shmbusd pid"));
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0);
}

Test(daemon, restart_sets_a_corrupt_channel_aside, .init = setup,
     .fini = teardown)
{
	char path[256];
	shmbus_bus *bus;
	shmbus_channel *ch;
	int fd;

	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	cr_assert(log_has("stopping"));
	/* Damage one field of "ow" (its capacity), restart. */
	snprintf(path, sizeof(path), "%s/ow", d.dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "the channel stays when the daemon stops");
	cr_assert_eq(pwrite(fd, "\x03\x00\x00\x00", 4,
			    offsetof(struct shmbus_hdr, capacity)), 4);
	close(fd);
	start_daemon();
	cr_assert(log_has("ow: invalid channel file"));
	cr_assert(log_has("set aside as"));
	cr_assert(log_has("blk: adopted"));
	/* A fresh "ow" was made, and the damaged one kept. */
	bus = shmbus_connect(d.sock);
	ch = shmbus_bus_open(bus, "ow", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(daemon, sighup_adds_channels_refuses_incompatible_changes,
     .init = setup, .fini = teardown)
{
	struct shmbus_bus_channel bc;
	shmbus_bus *bus = shmbus_connect(d.sock);
	int tries;

	cr_assert(bus);
	write_conf("[channel blk]\ncapacity = 128K\n"
		   "[channel newone]\ncapacity = 8K\nsubscribe = *\n");
	kill(d.pid, SIGHUP);
	for (tries = 0; tries < 200; tries++) {
		if (shmbus_bus_describe(bus, "newone", &bc) == 0)
			break;
		usleep(10000);
	}
	cr_assert_eq(bc.capacity, 8192);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.capacity, 65536, "an incompatible change applied");
	cr_assert(log_has("blk: refused an incompatible change"));
	cr_assert(log_has("configuration reloaded"));
	/* A broken file is refused, the daemon goes on. */
	write_conf("[channel x]\ncapacity = lots\n");
	kill(d.pid, SIGHUP);
	usleep(200000);
	cr_assert(log_has("reload refused"));
	cr_assert_eq(shmbus_bus_describe(bus, "newone", &bc), 0);
	shmbus_disconnect(bus);
}

/* ------------------------------------------------------------ shmbusctl */

/* Runs shmbusctl with `args` (through sh); returns its exit code and its
 * output (stdout and stderr) in out. */
static int ctl(char *out, size_t cap, const char *args)
{
	char cmd[1024];
	const char *bin = getenv("SHMBUSCTL");
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1",
		 bin && *bin ? bin : "build/tools/shmbusctl", args);
	p = popen(cmd, "r");
	cr_assert(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(daemon, shmbusctl_commands_and_exit_codes, .init = setup,
     .fini = teardown)
{
	char out[8192], args[512];

	snprintf(args, sizeof(args), "-b %s list", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "blk") && strstr(out, "tiny") &&
		  strstr(out, "overwrite"), "%s", out);

	snprintf(args, sizeof(args), "-b %s create made --capacity 16K "
		 "--policy overwrite --producers multi --mode 0640", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	snprintf(args, sizeof(args), "-b %s describe made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	cr_assert(strstr(out, "16384 bytes") && strstr(out, "overwrite, multi")
		  && strstr(out, "0640") && strstr(out, "created at run time"),
		  "%s", out);

	/* Refusals: 1, with the reason. */
	snprintf(args, sizeof(args), "-b %s create made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "create made:"), "%s", out);
	snprintf(args, sizeof(args), "-b %s create odd --capacity 5000",
		 d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "Invalid argument"), "%s", out);
	snprintf(args, sizeof(args), "-b %s describe nothing", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);
	cr_assert(strstr(out, "No such file"), "%s", out);

	snprintf(args, sizeof(args), "-b %s delete made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 0, "%s", out);
	snprintf(args, sizeof(args), "-b %s delete made", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 1, "%s", out);

	/* Usage: 2.  No daemon: 3. */
	snprintf(args, sizeof(args), "-b %s frobnicate", d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 2, "%s", out);
	snprintf(args, sizeof(args), "-b %s create x --policy sometimes",
		 d.sock);
	cr_assert_eq(ctl(out, sizeof(out), args), 2, "%s", out);
	snprintf(args, sizeof(args), "-b %s/none.sock list", d.dir);
	cr_assert_eq(ctl(out, sizeof(out), args), 3, "%s", out);
	cr_assert(strstr(out, "cannot reach shmbusd"), "%s", out);
}
