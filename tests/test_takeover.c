/* SPDX-License-Identifier: MIT */
/*
 * test_takeover.c - a single producer's successor taking over after
 * shmbusd restarts, timed.
 *
 * Every cycle kills shmbusd with kill -9 and starts it again, kills -9
 * the single producer of "blk" while it holds an open claim (before, right
 * after or well after the new daemon came up), and starts a successor.
 * The successor times connect, bus_open, pub_open and its first publish;
 * it then publishes a few more messages and stops inside a claim, to be
 * the next cycle's victim.  The test process subscribes and checks every
 * message: each producer's committed messages arrive whole, in order,
 * once, and nothing of the open claims.
 *
 * The distribution is printed (SHMBUS_TAKEOVER_N cycles, default 300);
 * only correctness is asserted: timing on a shared machine flakes.
 *
 * The client's side of a restart: shmbus_connect() waits for a daemon
 * that is not up yet, and fails after its bound when none comes;
 * shmbus_bus_open() survives two daemons dying under its request.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/protocol.h"

#define PER_CYCLE 20	/* messages each producer commits */
#define SLOW_NS (100 * 1000000ull)

/* What a successor sends back: its stamps, or where it failed. */
struct stamps {
	uint64_t t[5];	/* start, connected, opened, role taken, published */
	int failed;	/* 0, or the step (1..5) that failed */
	int err;	/* its errno or -return */
};

static uint32_t msg_len(uint64_t seq)
{
	/* Mailbox-sized and ring-sized messages, alternately. */
	return TH_MSG_MIN + (uint32_t)(seq * 37 % 100);
}

/* A successor: takes the producer role of c->name, timed, publishes
 * PER_CYCLE messages of producer c->id, then stops inside a claim until
 * killed. */
static int successor(void *arg)
{
	struct child *c = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	struct stamps st = { .failed = 0 };
	shmbus_bus *bus = NULL;
	shmbus_channel *ch = NULL;
	shmbus_pub *pub = NULL;
	uint8_t buf[256];
	void *slot;
	int rc = 0;

	st.t[0] = th_now_ns();
	bus = shmbus_connect(d.sock);	/* waits for a daemon coming up */
	if (!bus) {
		st.failed = 1;
		st.err = errno;
		goto out;
	}
	st.t[1] = th_now_ns();
	ch = shmbus_bus_open(bus, c->name, SHMBUS_ROLE_PUBLISH);
	if (!ch) {
		st.failed = 2;
		st.err = errno;
		goto out;
	}
	st.t[2] = th_now_ns();
	pub = shmbus_pub_open(ch, &pa);
	if (!pub) {
		st.failed = 3;
		st.err = errno;
		goto out;
	}
	st.t[3] = th_now_ns();
	for (uint64_t s = 0; s < PER_CYCLE; s++) {
		th_msg_fill(buf, msg_len(s), c->id, s);
		rc = shmbus_publish(pub, buf, msg_len(s));
		if (rc) {
			st.failed = 4;
			st.err = -rc;
			goto out;
		}
		if (s == 0)
			st.t[4] = th_now_ns();
	}
	rc = shmbus_claim(pub, 100, &slot);
	if (rc) {
		st.failed = 5;
		st.err = -rc;
		goto out;
	}
	memset(slot, 0xee, 100);	/* half-written, never committed */
out:
	if (write(c->ready[1], &st, sizeof(st)) != sizeof(st))
		return 9;
	if (st.failed)
		return 2;
	pause();			/* until killed */
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Reads producer id's PER_CYCLE messages, each whole and in order, and
 * then nothing (the producer's claim is open). */
static void read_cycle(shmbus_sub *sub, uint32_t want_id)
{
	uint64_t start = th_now_ns();
	uint8_t buf[2048];
	ssize_t n;

	for (uint64_t got = 0; got < PER_CYCLE;) {
		uint32_t id;
		uint64_t seq;

		n = shmbus_read(sub, buf, sizeof(buf), NULL);
		if (n == -EAGAIN) {
			cr_assert(th_now_ns() - start < 5000000000ull,
				  "producer %u: %llu of %u messages, then "
				  "nothing for 5 s", want_id,
				  (unsigned long long)got, PER_CYCLE);
			continue;
		}
		cr_assert(n > 0, "read: %s", shmbus_strerror((int)n));
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0,
			     "torn message (producer %u, #%llu)", want_id,
			     (unsigned long long)got);
		cr_assert(id == want_id && seq == got &&
			  (size_t)n == msg_len(seq),
			  "expected producer %u #%llu, got producer %u #%llu "
			  "(%zd bytes)", want_id, (unsigned long long)got, id,
			  (unsigned long long)seq, n);
		got++;
	}
	n = shmbus_read(sub, buf, sizeof(buf), NULL);
	cr_assert_eq(n, -EAGAIN, "producer %u: a message past its open claim",
		     want_id);
}

static pid_t start_successor(struct child *c, uint32_t id,
			     struct stamps *st)
{
	pid_t pid;
	ssize_t n;

	c->id = id;
	pid = th_spawn(successor, c);
	n = read(c->ready[0], st, sizeof(*st));
	cr_assert_eq(n, (ssize_t)sizeof(*st), "successor %u died (%d)", id,
		     n == 0 ? th_wait(pid) : -1);
	cr_assert_eq(st->failed, 0, "successor %u: step %d failed: %s", id,
		     st->failed, strerror(st->err));
	return pid;
}

/* Until the daemon counts `want` clients of channel name (the producer
 * re-registered), for at most 1 s. */
static void await_clients(shmbus_bus *bus, const char *name, uint32_t want)
{
	struct shmbus_bus_channel bc = { .clients = 0 };

	for (int i = 0; i < 1000; i++) {
		if (shmbus_bus_describe(bus, name, &bc) == 0 &&
		    bc.clients >= want)
			return;
		usleep(1000);
	}
}

static void kill_producer(pid_t p)
{
	kill(p, SIGKILL);
	cr_assert_eq(th_wait(p), 128 + SIGKILL);
}

static const char *const when_name[] = {
	"killed while the daemon is down", "killed as the daemon comes up",
	"killed after re-registering", "killed 0-20 ms after the restart",
	"successor started with the daemon",
	"successor started before the killed one is reaped",
};

Test(takeover, single_producer_after_daemon_restart, .init = setup,
     .fini = teardown, .timeout = 300)
{
	uint64_t cycles = th_env_count("SHMBUS_TAKEOVER_N", 300);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct child c = { .name = "blk" };
	uint64_t *total, *opened, *phase[4], slow = 0, t_start = th_now_ns();
	struct shmbus_channel_info in;
	char slow_log[2048] = "";
	size_t slow_len = 0;
	struct stamps st;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	pid_t p;

	cr_assert(sub);
	cr_assert(cycles > 0 && cycles < 1000000);
	total = calloc(cycles, sizeof(*total));
	opened = calloc(cycles, sizeof(*opened));
	for (int k = 0; k < 4; k++)
		phase[k] = calloc(cycles, sizeof(**phase));
	cr_assert(total && opened && phase[0] && phase[1] && phase[2] && phase[3]);
	child_pipes(&c);
	srand(1);

	p = start_successor(&c, 0, &st);
	read_cycle(sub, 0);
	for (uint64_t i = 0; i < cycles; i++) {
		unsigned when = (unsigned)(i % 6);
		pid_t dead = 0;

		kill(d.pid, SIGKILL);
		cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
		if (when == 0 || when == 4)
			kill_producer(p);
		if (when == 4) {
			/* The successor comes while the daemon starts. */
			d.pid = spawn_daemon();
		} else {
			start_daemon();
			if (when == 2)	/* this test's client and the producer */
				await_clients(bus, "blk", 2);
			else if (when == 3)
				usleep((useconds_t)(rand() % 20000));
			if (when == 5) {
				/* A zombie until after the successor took
				 * over: gone, as far as the bus is
				 * concerned.  WNOWAIT leaves it unreaped. */
				siginfo_t si;

				kill(p, SIGKILL);
				cr_assert_eq(waitid(P_PID, (id_t)p, &si,
						    WEXITED | WNOWAIT), 0);
				dead = p;
			} else if (when != 0) {
				kill_producer(p);
			}
		}
		p = start_successor(&c, (uint32_t)(i + 1), &st);
		if (dead)
			cr_assert_eq(th_wait(dead), 128 + SIGKILL);
		read_cycle(sub, (uint32_t)(i + 1));

		total[i] = st.t[4] - st.t[0];
		opened[i] = st.t[4] - st.t[1];
		for (int k = 0; k < 4; k++)
			phase[k][i] = st.t[k + 1] - st.t[k];
		if (total[i] > SLOW_NS) {
			slow++;
			if (slow_len < sizeof(slow_log) - 200)
				slow_len += (size_t)snprintf(
					slow_log + slow_len,
					sizeof(slow_log) - slow_len,
					"  cycle %llu (%s): %.1f ms = connect "
					"%.1f + bus_open %.1f + pub_open %.1f"
					" + publish %.1f\n",
					(unsigned long long)i, when_name[when],
					total[i] / 1e6, phase[0][i] / 1e6,
					phase[1][i] / 1e6, phase[2][i] / 1e6,
					phase[3][i] / 1e6);
		}
	}
	kill_producer(p);

	shmbus_channel_info(ch, &in);
	/* A claim takes its sequence number: each producer's open one
	 * counts too. */
	cr_assert_eq(in.published, (cycles + 1) * (PER_CYCLE + 1),
		     "the channel counts other messages than ours");
	/* Every dead producer's open claim was padded once: by the daemon
	 * or by its successor (the last one's may not be yet). */
	cr_assert(in.repairs == cycles || in.repairs == cycles + 1,
		  "%llu repairs after %llu kills",
		  (unsigned long long)in.repairs, (unsigned long long)cycles);

	qsort(total, cycles, sizeof(*total), cmp_u64);
	qsort(opened, cycles, sizeof(*opened), cmp_u64);
	for (int k = 0; k < 4; k++)
		qsort(phase[k], cycles, sizeof(**phase), cmp_u64);
	fprintf(stderr,
		"takeover after a daemon restart, %llu cycles in %.1f s "
		"(connect -> first publish):\n"
		"  p50 %.2f ms  p99 %.2f ms  max %.2f ms  over 100 ms: %llu\n"
		"  bus_open -> first publish: p50 %.2f ms  p99 %.2f ms  "
		"max %.2f ms\n"
		"  max per step: connect %.2f, bus_open %.2f, pub_open %.2f, "
		"publish %.2f ms\n%s",
		(unsigned long long)cycles, (th_now_ns() - t_start) / 1e9,
		total[cycles / 2] / 1e6, total[cycles * 99 / 100] / 1e6,
		total[cycles - 1] / 1e6, (unsigned long long)slow,
		opened[cycles / 2] / 1e6, opened[cycles * 99 / 100] / 1e6,
		opened[cycles - 1] / 1e6,
		phase[0][cycles - 1] / 1e6, phase[1][cycles - 1] / 1e6,
		phase[2][cycles - 1] / 1e6, phase[3][cycles - 1] / 1e6,
		slow_log);
	free(total);
	free(opened);
	for (int k = 0; k < 4; k++)
		free(phase[k]);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* ------------------------------------------------ clients and restarts */

/* Tells the parent how long its shmbus_connect() took, then opens "blk"
 * to publish: exit 0 if both worked. */
static int late_client(void *arg)
{
	struct child *c = arg;
	uint64_t t0 = th_now_ns(), took;
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_channel *ch;

	took = th_now_ns() - t0;
	if (write(c->ready[1], &took, sizeof(took)) != sizeof(took) || !bus)
		return 2;
	ch = shmbus_bus_open(bus, "blk", SHMBUS_ROLE_PUBLISH);
	if (!ch)
		return 3;
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

Test(client, connect_waits_for_a_daemon_coming_up, .init = setup,
     .fini = teardown)
{
	struct child c = { .name = "blk" };
	uint64_t took = 0;
	pid_t p;

	kill(d.pid, SIGKILL);
	cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
	unlink(d.sock);		/* ENOENT first, as before a first start */
	child_pipes(&c);
	p = th_spawn(late_client, &c);
	usleep(300000);
	start_daemon();
	cr_assert_eq(read(c.ready[0], &took, sizeof(took)),
		     (ssize_t)sizeof(took));
	cr_assert_eq(th_wait(p), 0, "connect or bus_open failed");
	cr_assert_geq(took, 250000000ull, "connected to no daemon?");
	cr_log_info("connected %llu ms after the start, the daemon came up "
		    "at 300 ms", (unsigned long long)(took / 1000000));
}

/* A daemon that dies under every OPEN request: it accepts, answers HELLO,
 * reads the request and closes the connection, `rounds` times; then it
 * exits (leaving its socket file, as a killed daemon does).  Exits with
 * the number of OPEN requests it saw. */
static int dying_daemon(void *arg)
{
	struct child *c = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0), opens = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.sock);
	unlink(d.sock);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lfd, 8))
		return 100;
	say(c->ready[1]);
	while (opens < (int)c->n) {
		struct {
			struct shmbus_ctl_hdr h;
			uint8_t body[512];
		} req, rep = { .h = { 0 } };
		struct shmbus_ctl_hello *hello = (void *)rep.body;
		int fd = accept(lfd, NULL, NULL);
		ssize_t n;

		if (fd < 0)
			return 101;
		while ((n = recv(fd, &req, sizeof(req), 0)) >=
		       (ssize_t)sizeof(req.h)) {
			if (req.h.type == SHMBUS_CTL_OPEN) {
				opens++;
				break;	/* dies without an answer */
			}
			if (req.h.type != SHMBUS_CTL_HELLO)
				continue;
			rep.h = (struct shmbus_ctl_hdr){
				.magic = SHMBUS_CTL_MAGIC,
				.version = SHMBUS_CTL_VERSION,
				.type = SHMBUS_CTL_HELLO | SHMBUS_CTL_REPLY,
				.id = req.h.id, .len = sizeof(*hello),
			};
			memset(hello, 0, sizeof(*hello));
			hello->daemon_pid = (uint32_t)getpid();
			if (send(fd, &rep, sizeof(rep.h) + sizeof(*hello),
				 0) < 0)
				return 102;
		}
		close(fd);
	}
	return opens;
}

/* Connected before the restarts; opens "blk" when told to: exit 0 if
 * bus_open worked. */
static int patient_client(void *arg)
{
	struct child *c = arg;
	shmbus_bus *bus = shmbus_connect(d.sock);
	shmbus_channel *ch;

	if (!bus)
		return 2;
	say(c->ready[1]);
	hear(c->go[0]);
	ch = shmbus_bus_open(bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch)
		return errno == ENOTCONN ? 3 : 4;
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

Test(client, bus_open_across_two_daemon_deaths, .init = setup,
     .fini = teardown)
{
	struct child cl = { .name = "blk" }, fake = { .n = 2 };
	pid_t pc, pf;

	child_pipes(&cl);
	child_pipes(&fake);
	pc = th_spawn(patient_client, &cl);
	hear(cl.ready[0]);
	kill(d.pid, SIGKILL);
	cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
	/* Two daemons in a row die under the client's request; the third,
	 * a real one, answers it. */
	pf = th_spawn(dying_daemon, &fake);
	hear(fake.ready[0]);
	say(cl.go[1]);
	cr_assert_eq(th_wait(pf), 2, "the request did not reach both");
	start_daemon();
	cr_assert_eq(th_wait(pc), 0, "bus_open failed (%s)",
		     "3: ENOTCONN, 4: another error");
}

Test(client, connect_without_a_daemon_fails_after_its_bound)
{
	const char *dir = th_mkdir();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char sock[sizeof(sa.sun_path)], stale[sizeof(sa.sun_path)];
	uint64_t t0, took;
	shmbus_bus *b;
	int fd;

	snprintf(sock, sizeof(sock), "%s/none.sock", dir);
	snprintf(stale, sizeof(stale), "%s/stale.sock", dir);
	/* A socket file nobody listens on: what a killed daemon leaves. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", stale);
	fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	close(fd);

	/* The default bound: 2 s. */
	t0 = th_now_ns();
	b = shmbus_connect(sock);
	took = th_now_ns() - t0;
	cr_assert_null(b);
	cr_assert_eq(errno, ENOENT, "errno %d", errno);
	cr_assert(took >= 2000000000ull && took < 2500000000ull,
		  "gave up after %llu ms", (unsigned long long)(took / 1000000));

	t0 = th_now_ns();
	b = shmbus_connect_timeout(stale, 200000000);
	took = th_now_ns() - t0;
	cr_assert_null(b);
	cr_assert_eq(errno, ECONNREFUSED, "errno %d", errno);
	cr_assert(took >= 200000000ull && took < 700000000ull,
		  "gave up after %llu ms", (unsigned long long)(took / 1000000));

	/* 0: one try. */
	t0 = th_now_ns();
	b = shmbus_connect_timeout(stale, 0);
	cr_assert_null(b);
	cr_assert_eq(errno, ECONNREFUSED);
	cr_assert_lt(th_now_ns() - t0, 100000000ull);
	th_rmdir(dir);
}

/* The environment variable sets the bound of shmbus_connect(). */
static int env_client(void *arg)
{
	const char *sock = arg;
	uint64_t t0 = th_now_ns(), took;
	shmbus_bus *b;

	setenv("SHMBUS_CONNECT_TIMEOUT_MS", "300", 1);
	b = shmbus_connect(sock);
	took = th_now_ns() - t0;
	if (b || errno != ENOENT)
		return 2;
	return took >= 300000000ull && took < 800000000ull ? 0 : 3;
}

Test(client, connect_bound_from_the_environment)
{
	const char *dir = th_mkdir();
	char sock[128];

	snprintf(sock, sizeof(sock), "%s/none.sock", dir);
	cr_assert_eq(th_wait(th_spawn(env_client, sock)), 0,
		     "2: connected or another error, 3: not after 300 ms");
	th_rmdir(dir);
}

/* shmbus_connect_timeout() with the longest bounds waits for the daemon,
 * for ever in effect: the deadline, now + bound, must saturate, not
 * overflow (signed overflow, which make sanitize's UBSan stops at). */
static int longest_client(void *arg)
{
	static const int64_t bounds[] = { INT64_MAX, INT64_MAX - 1000000000 };
	const char *sock = arg;
	pid_t kids[2];

	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			shmbus_bus *b = shmbus_connect_timeout(sock, bounds[i]);

			_exit(b ? 2 : 3);	/* it must not return */
		}
	}
	for (int i = 0; i < 2; i++) {
		int st;

		usleep(i ? 0 : 300000);
		if (waitpid(kids[i], &st, WNOHANG) != 0)
			return 1 + i;	/* gave up, or died */
		kill(kids[i], SIGKILL);
		waitpid(kids[i], &st, 0);
	}
	return 0;
}

Test(client, connect_with_the_longest_bound_waits)
{
	const char *dir = th_mkdir();
	char sock[128];

	snprintf(sock, sizeof(sock), "%s/nobody.sock", dir);
	cr_expect_eq(th_wait(th_spawn(longest_client, sock)), 0);
	th_rmdir(dir);
}
