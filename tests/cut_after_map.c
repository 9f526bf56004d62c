/* SPDX-License-Identifier: MIT */
/*
 * cut_after_map.c - an LD_PRELOAD shim for test_busstat: the file named by
 * $CUT_PATH is cut to $CUT_SIZE bytes just after its $CUT_NTH (default 1)
 * mapping, so that the cut lands after the opener checked the file's size
 * and before it reads what it mapped: a cut "under" busstat, every time
 * rather than once in a while.  And $UNLINK_PATH is removed at busstat's
 * $UNLINK_NTH (default 1) closedir() of its directory: a channel deleted
 * between the listing of its directory and its sample.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static void *(*real)(void *, size_t, int, int, int, off_t);
	static int seen;
	const char *want = getenv("CUT_PATH"), *nth = getenv("CUT_NTH");
	const char *size = getenv("CUT_SIZE");
	char link[64], path[4096];
	ssize_t n;
	void *p;

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "mmap");
	p = real(addr, len, prot, flags, fd, off);
	if (p == MAP_FAILED || fd < 0 || !want || !size)
		return p;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return p;
	path[n] = 0;
	if (!strcmp(path, want) && ++seen == (nth ? atoi(nth) : 1) &&
	    truncate(want, atol(size)) < 0)
		perror("cut_after_map: truncate");
	return p;
}

int closedir(DIR *d);

int closedir(DIR *d)
{
	static int (*real)(DIR *);
	static int seen;
	const char *want = getenv("UNLINK_PATH"), *nth = getenv("UNLINK_NTH");
	char link[64], path[4096];
	const char *slash = want ? strrchr(want, '/') : NULL;
	bool ours = false;
	ssize_t n;
	int rc;

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "closedir");
	/* Only the closedir() of the directory that holds it counts. */
	snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd(d));
	n = slash ? readlink(link, path, sizeof(path) - 1) : -1;
	if (n > 0) {
		path[n] = 0;
		ours = (size_t)n == (size_t)(slash - want) &&
		       !strncmp(path, want, (size_t)n);
	}
	rc = real(d);
	if (ours && ++seen == (nth ? atoi(nth) : 1) && unlink(want) < 0)
		perror("cut_after_map: unlink");
	return rc;
}
