/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

const char *th_mkdir(void)
{
	static __thread char dir[64];

	snprintf(dir, sizeof(dir), "/dev/shm/shmbus-test-XXXXXX");
	cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	return dir;
}

void th_rmdir(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		/* A test's own subdirectories (a daemon's shm_dir) too. */
		if (unlink(path) < 0 && errno == EISDIR)
			th_rmdir(path);
	}
	closedir(d);
	rmdir(dir);
}

shmbus_channel *th_create(const char *dir, uint64_t cap, uint32_t max_msg,
			  enum shmbus_policy pol, enum shmbus_producers prod)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	a.capacity = cap;
	a.max_msg = max_msg;
	a.policy = pol;
	a.producers = prod;
	ch = shmbus_channel_create(dir, "ch", &a, SHMBUS_CREATE_EXCL);
	cr_assert(ch, "create: %s", shmbus_strerror(errno));
	return ch;
}

shmbus_channel *th_create_mp(const char *dir, const char *name, uint64_t cap)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	a.capacity = cap;
	a.producers = SHMBUS_MULTI_PRODUCER;
	ch = shmbus_channel_create(dir, name, &a, SHMBUS_CREATE_EXCL);
	cr_assert(ch, "create %s: %s", name, shmbus_strerror(errno));
	return ch;
}

pid_t th_spawn(int (*fn)(void *), void *arg)
{
	pid_t parent = getpid(), pid = fork();

	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* A child outlives a test killed by its time limit, and would
		 * spin on for ever: it dies with the test instead. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		_exit(fn(arg));
	}
	return pid;
}

/* The kernel's last pid (ns_last_pid), or -1 where it cannot be read. */
long th_last_pid(void)
{
	FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* Sets the pid namespace's last pid given out (the next fork gets the
 * first free one after it); false if it cannot be written. */
bool th_set_last_pid(long v)
{
	FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld", v) >= 0;
	return fclose(f) == 0 && ok;
}

pid_t th_spawn_as(pid_t want, int (*fn)(void *), void *arg)
{
	long last = th_last_pid();

	for (int i = 0; last > 0 && i < 10; i++) {
		pid_t p;

		if (!th_set_last_pid((long)want - 1))
			return -1;
		p = fork();
		if (p == 0) {
			/* As th_spawn()'s children: gone with the test. */
			if (getpid() != want ||
			    prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
				_exit(99);
			_exit(fn(arg));
		}
		th_set_last_pid(last > p ? last : p);
		cr_assert_geq(p, 0);
		if (p == want)
			return p;
		waitpid(p, NULL, 0);
	}
	return -1;
}

int th_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

uint64_t th_head(shmbus_channel *ch)
{
	struct shmbus_channel_info in;

	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	return in.head;
}

void th_fini_fail(const char *what)
{
	const char *path = getenv("SHMBUS_FINI_FAILURES");
	FILE *f = path && *path ? fopen(path, "a") : NULL;

	cr_expect_fail("%s", what);
	fprintf(stderr, "teardown: %s\n", what);
	if (f) {
		fprintf(f, "%s: %s\n", criterion_current_test ?
			criterion_current_test->name : "?", what);
		fclose(f);
	}
}
