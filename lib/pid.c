/* SPDX-License-Identifier: MIT */
/*
 * pid.c - whether the process a slot names is gone for good.
 *
 * A slot is repaired (its claim padded, its cursor released) only when its
 * process can never touch it again: no such process, or a zombie with no
 * thread left, which has closed everything and never runs again.  A
 * zombie leader with live threads (its main thread called pthread_exit())
 * is alive: those threads may still publish.  A stopped or slow process
 * is alive, and so is one still on its way out.  shmbusd, a producer
 * taking over a role, and a producer releasing what holds it back all ask
 * the same question here, so that they agree on who is dead.
 *
 * Pid reuse: a slot names a pid, and a pid reused by an unrelated process
 * makes the slot look alive until that process exits.  Every repair
 * compares the state and the pid in the CAS that takes the slot; between
 * a verdict and that CAS, a dead owner's pid would have to be reused by a
 * process that took this very slot, which is not ruled out, only
 * unlikely (slots of dead owners are not free for the taking).  The
 * process that was given the pid must not take a single producer's role
 * that names it for its own: it asks sb_sp_role_gone() (producer.c),
 * which knows the roles its handles hold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"

bool sb_pid_gone(uint32_t pid)
{
	char path[32], buf[512], *p;
	unsigned long threads = 0;
	ssize_t n;
	int fd;

	if (pid == 0 || pid > INT32_MAX)
		return true;
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	/* The process existed a moment ago.  A /proc that hides other
	 * users' processes (hidepid=2) says ENOENT for a live one: it is
	 * gone only if the kernel says so again, and any other failure to
	 * look leaves it alive. */
	if (fd < 0)
		return errno == ENOENT && kill((pid_t)pid, 0) < 0 &&
		       errno == ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	p = strrchr(buf, ')');	/* the name may hold anything but this */
	if (!p || p[1] != ' ' || (p[2] != 'Z' && p[2] != 'X'))
		return false;
	/* Field 20, num_threads: a zombie leader counts itself. */
	p += 2;
	for (int field = 3; field < 20 && p; field++)
		p = strchr(p + 1, ' ');
	if (p)
		threads = strtoul(p + 1, NULL, 10);
	return threads == 1;
}
