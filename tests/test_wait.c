/* SPDX-License-Identifier: MIT */
/*
 * test_wait.c - waiting: a sleeping subscriber is woken by a publish, a
 * timed wait returns after its timeout, and neither the publish path nor
 * the poll path makes a system call when no subscriber sleeps.  The last
 * is checked with a seccomp filter that kills the process on any system
 * call but exit: a single syscall fails the test.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static const char *dir;
static shmbus_channel *ch;

static void setup(void)
{
	dir = th_mkdir();
	ch = th_create(dir, 1u << 23, 256, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

static void teardown(void)
{
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/* From here on any system call but exit kills the process. */
static void forbid_syscalls(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* The sanitizer runtimes call sigaltstack() on the way out
		 * of the process; shmbus never does. */
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sigaltstack, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]),
				   .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		_exit(90);
}

#define NOSYS_N 100000u

static int count_msgs(const struct shmbus_msg *m, void *arg)
{
	uint64_t *n = arg;

	if (m->seq != *n || m->len != 32)
		_exit(91);
	(*n)++;
	return 0;
}

static int spin_subscriber(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_sub *s = c ? shmbus_sub_open(c, NULL) : NULL;
	uint64_t n = 0;

	if (!s)
		return 2;
	/* Tell the parent we are in, then go syscall-free. */
	if (write(STDERR_FILENO, "", 0) < 0)
		return 3;
	forbid_syscalls();
	while (n < NOSYS_N)
		if (shmbus_poll(s, count_msgs, &n, 64) < 0)
			_exit(92);
	_exit(0);
}

static int nosys_producer(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;
	uint8_t msg[32] = { 0 };

	if (!p)
		return 2;
	forbid_syscalls();
	for (uint32_t i = 0; i < NOSYS_N; i++) {
		void *buf;

		if (i % 2) {
			if (shmbus_publish(p, msg, sizeof(msg)))
				_exit(93);
		} else if (shmbus_claim(p, 32, &buf) || shmbus_commit(p)) {
			_exit(94);
		}
	}
	_exit(0);
}

Test(wait, no_syscalls_on_publish_and_poll, .init = setup, .fini = teardown)
{
	struct shmbus_channel_info in;
	pid_t s, p;

	s = th_spawn(spin_subscriber, (void *)dir);
	do {
		usleep(1000);
		shmbus_channel_info(ch, &in);
	} while (in.subscribers < 1);
	p = th_spawn(nosys_producer, (void *)dir);
	cr_assert_eq(th_wait(p), 0, "producer made a system call (31 = SIGSYS)");
	cr_assert_eq(th_wait(s), 0, "subscriber made a system call");
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.published, NOSYS_N);
	cr_assert_eq(in.wakeups, 0);
}

/* The seccomp filter really catches a system call. */
static int makes_syscall(void *arg)
{
	(void)arg;
	forbid_syscalls();
	getppid();
	return 0;
}

Test(wait, seccomp_check_can_fail)
{
	cr_assert_eq(th_wait(th_spawn(makes_syscall, NULL)), 128 + SIGSYS);
}

static int sleeper(void *arg)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP, .spin_ns = 1000 };
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_sub *s = c ? shmbus_sub_open(c, &sa) : NULL;
	char buf[16];

	if (!s)
		return 2;
	if (shmbus_wait(s, 10 * 1000000000LL))
		return 3;
	if (shmbus_read(s, buf, sizeof(buf), NULL) != 5 || memcmp(buf, "wake!", 5))
		return 4;
	return 0;
}

static char proc_state(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] ? p[2] : '?';
}

Test(wait, sleeping_subscriber_is_woken, .init = setup, .fini = teardown)
{
	struct shmbus_channel_info in;
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	pid_t s = th_spawn(sleeper, (void *)dir);
	int i;

	do {
		usleep(1000);
		shmbus_channel_info(ch, &in);
	} while (in.subscribers < 1);
	/* Wait until it is really asleep in the kernel. */
	for (i = 0; i < 5000 && proc_state(s) != 'S'; i++)
		usleep(1000);
	cr_assert_eq(proc_state(s), 'S', "subscriber never slept");
	usleep(20000);
	cr_assert_eq(shmbus_publish(p, "wake!", 5), 0);
	cr_assert_eq(th_wait(s), 0);
	shmbus_channel_info(ch, &in);
	cr_assert_geq(in.wakeups, 1, "the publish made the wake call");
	/* Nobody sleeps now: the next publish makes none. */
	cr_assert_eq(shmbus_publish(p, "again", 5), 0);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.wakeups, 1);
	shmbus_pub_close(p);
}

static void timed_wait(enum shmbus_wait how)
{
	struct shmbus_sub_attr sa = { .wait = how, .spin_ns = 1000 };
	shmbus_sub *s = shmbus_sub_open(ch, &sa);
	uint64_t t0 = th_now_ns(), dt;

	cr_assert_eq(shmbus_wait(s, 50 * 1000000), -ETIMEDOUT);
	dt = th_now_ns() - t0;
	cr_assert_geq(dt, 50 * 1000000u, "returned early: %lu ns", (unsigned long)dt);
	/* Loose upper bound: a wait must end, not hang. */
	cr_assert_lt(dt, 5000 * 1000000ull);
	cr_assert_eq(shmbus_wait(s, 0), -ETIMEDOUT);
	shmbus_sub_close(s);
}

Test(wait, timed_wait_sleep, .init = setup, .fini = teardown)
{
	timed_wait(SHMBUS_WAIT_SLEEP);
}

Test(wait, timed_wait_yield, .init = setup, .fini = teardown)
{
	timed_wait(SHMBUS_WAIT_YIELD);
}

Test(wait, timed_wait_spin, .init = setup, .fini = teardown)
{
	timed_wait(SHMBUS_WAIT_SPIN);
}

/*
 * A signal caught while a subscriber sleeps ends the wait with -EINTR,
 * whatever its timeout and whether or not the handler was installed with
 * SA_RESTART (signal(2)'s default): the kernel would restart an untimed
 * FUTEX_WAIT after such a handler, and a wait for ever then outlived the
 * signal meant to stop it.  The signaller publishes after a second, so
 * that a wait that missed the signals ends (with 0) instead of hanging.
 */
static void on_usr1(int sig)
{
	(void)sig;
}

struct interrupter {
	pthread_t target;
	atomic_int done;
	int rc;
};

static void *interrupt_sleeper(void *arg)
{
	struct interrupter *x = arg;
	struct shmbus_sub_info si;
	shmbus_pub *p;
	int asleep = 0;

	for (int i = 0; i < 2000 && !asleep; i++) {
		for (unsigned k = 0; k < SHMBUS_MAX_SUBSCRIBERS; k++)
			if (shmbus_channel_subscriber(ch, k, &si) == 0 &&
			    si.sleeping)
				asleep = 1;
		if (!asleep)
			usleep(1000);
	}
	/* Again every 20 ms: a sleep in naps (no membarrier) is out of the
	 * kernel now and then, where a signal is no signal caught asleep. */
	for (int i = 0; i < 1000 && !x->done; i++) {
		if (i % 20 == 19)
			pthread_kill(x->target, SIGUSR1);
		usleep(1000);
	}
	x->rc = 0;
	if (!x->done) {
		p = shmbus_pub_open(ch, NULL);
		x->rc = p ? shmbus_publish(p, "late", 4) : -errno;
		shmbus_pub_close(p);
	}
	return NULL;
}

static int wait_signalled(int flags, int64_t timeout_ns)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP,
				      .spin_ns = 1000 };
	struct sigaction act = { .sa_handler = on_usr1, .sa_flags = flags };
	struct sigaction old;
	struct interrupter x = { .target = pthread_self() };
	shmbus_sub *s = shmbus_sub_open(ch, &sa);
	pthread_t t;
	int rc;

	cr_assert_not_null(s);
	sigemptyset(&act.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &act, &old), 0);
	cr_assert_eq(pthread_create(&t, NULL, interrupt_sleeper, &x), 0);
	rc = shmbus_wait(s, timeout_ns);
	x.done = 1;
	pthread_join(t, NULL);
	sigaction(SIGUSR1, &old, NULL);
	cr_assert_eq(x.rc, 0);
	shmbus_sub_close(s);
	return rc;
}

Test(wait, a_signal_ends_a_sleep_with_eintr, .init = setup, .fini = teardown)
{
	cr_assert_eq(wait_signalled(SA_RESTART, -1), -EINTR,
		     "a wait for ever outlived a SA_RESTART handler");
	cr_assert_eq(wait_signalled(0, -1), -EINTR);
	cr_assert_eq(wait_signalled(SA_RESTART, 10 * 1000000000LL), -EINTR);
}

Test(wait, returns_at_once_when_a_message_waits, .init = setup, .fini = teardown)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP };
	shmbus_sub *s = shmbus_sub_open(ch, &sa);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);

	cr_assert_eq(shmbus_publish(p, "x", 1), 0);
	cr_assert_eq(shmbus_wait(s, -1), 0);
	shmbus_pub_close(p);
	shmbus_sub_close(s);
}

Test(wait, block_producer_times_out_when_full, .init = setup, .fini = teardown)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 20 * 1000000 };
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	shmbus_pub *p = shmbus_pub_open(ch, &pa);
	uint8_t msg[256] = { 0 };
	uint64_t t0;
	int rc;

	while ((rc = shmbus_publish(p, msg, sizeof(msg))) == 0)
		;
	cr_assert_eq(rc, -ETIMEDOUT);
	t0 = th_now_ns();
	cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), -ETIMEDOUT);
	cr_assert_geq(th_now_ns() - t0, 20 * 1000000u);
	/* Reading makes room: three records cover one more plus the largest
	 * wrap padding its claim may need. */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(shmbus_read(s, msg, sizeof(msg), NULL), 256);
	cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	shmbus_pub_close(p);
	shmbus_sub_close(s);
}

static int publish_within_int64_max(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = INT64_MAX };
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_pub *p = c ? shmbus_pub_open(c, &pa) : NULL;
	uint8_t msg[256] = { 0 };

	if (!p)
		return 2;
	return shmbus_publish(p, msg, sizeof(msg)) == 0 ? 0 : 3;
}

static int publish_later(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;

	if (!p)
		return 2;
	usleep(100000);
	return shmbus_publish(p, "late", 4) == 0 ? 0 : 3;
}

/* A timeout of INT64_MAX nanoseconds is as good as none: the deadline
 * saturates, it does not wrap into the past. */
Test(wait, the_longest_timeouts_wait, .init = setup, .fini = teardown)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	shmbus_pub *p = shmbus_pub_open(ch, &pa);
	uint8_t msg[256] = { 0 };
	pid_t pid;
	int rc;

	while ((rc = shmbus_publish(p, msg, sizeof(msg))) == 0)
		;
	cr_assert_eq(rc, -EAGAIN);
	shmbus_pub_close(p);
	pid = th_spawn(publish_within_int64_max, (void *)dir);
	usleep(100000);
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "a publish with a "
		     "timeout of INT64_MAX gave up on a full ring");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(shmbus_read(s, msg, sizeof(msg), NULL), 256);
	cr_assert_eq(th_wait(pid), 0);
	while (shmbus_read(s, msg, sizeof(msg), NULL) > 0)
		;
	pid = th_spawn(publish_later, (void *)dir);
	cr_assert_eq(shmbus_wait(s, INT64_MAX), 0);
	cr_assert_eq(th_wait(pid), 0);
	shmbus_sub_close(s);
}

/*
 * Producers make the wake check (and pay its fence) only on a channel
 * where a subscriber may sleep, which such a subscriber says when it opens
 * (hdr.sleep_ok, made visible to every producer before its first wait).
 * A producer streams with pauses, long enough now and then for a sleeper
 * to fall asleep, while sleeping subscribers come and go, each opened in
 * the middle of the stream: every one of them must be woken for every
 * message.  A wake-up lost would leave one asleep until its 2 s timeout
 * while messages keep coming (a lost wake-up planted in the library fails
 * this test).
 */
#define WAKE_GENERATIONS 12
#define WAKE_PER_GEN 300

static volatile int *stream_stop;

static int pausing_producer(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(arg, "ch");
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;
	uint64_t x = 88172645463325252ull;

	if (!p)
		return 2;
	while (!*stream_stop) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (shmbus_publish(p, &x, sizeof(x)))
			return 3;
		if (x % 8 == 0)
			usleep(50 + x % 200);	/* a sleeper falls asleep */
		else
			for (uint64_t i = x % 4096; i; i--)
				__builtin_ia32_pause();
	}
	shmbus_pub_close(p);
	return 0;
}

static int count_any(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	++*(int *)arg;
	return 0;
}

Test(wait, no_wake_up_is_lost_to_a_streaming_producer, .init = setup,
     .fini = teardown, .timeout = 120)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP,
				      .spin_ns = 1000 };
	pid_t p;

	stream_stop = mmap(NULL, sizeof(*stream_stop), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(stream_stop, MAP_FAILED);
	p = th_spawn(pausing_producer, (void *)dir);
	for (int gen = 0; gen < WAKE_GENERATIONS; gen++) {
		shmbus_sub *s = shmbus_sub_open(ch, &sa);
		int got = 0, rc;

		cr_assert(s, "%s", shmbus_strerror(errno));
		while (got < WAKE_PER_GEN) {
			uint64_t t0 = th_now_ns(), dt;

			rc = shmbus_wait(s, 2000000000);
			dt = th_now_ns() - t0;
			cr_assert_eq(rc, 0, "subscriber %d, after %d messages: "
				     "%s", gen, got, shmbus_strerror(-rc));
			/* The producer publishes every 250 us at most: a
			 * wait that lasts is one whose wake-up was lost,
			 * ended by its timeout with a message waiting. */
			cr_assert_lt(dt, 500000000u, "subscriber %d, after %d "
				     "messages: woken after %lu ms", gen, got,
				     (unsigned long)(dt / 1000000));
			cr_assert_geq(shmbus_poll(s, count_any, &got, 0), 0);
		}
		shmbus_sub_close(s);
	}
	*stream_stop = 1;
	cr_assert_eq(th_wait(p), 0);
}
