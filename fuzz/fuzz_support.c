/* SPDX-License-Identifier: MIT */
/*
 * fuzz_support.c - the harnesses' private directories and their failure
 * report.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

void fuzz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
	abort();	/* libFuzzer and the suite both report a crash */
}

const char *fuzz_mkdir(const char *what)
{
	char *dir = malloc(PATH_MAX);

	if (!dir)
		fuzz_fail(__FILE__, __LINE__, "malloc");
	snprintf(dir, PATH_MAX, "/dev/shm/shmbus-fuzz-%s-%d-XXXXXX", what,
		 (int)getpid());
	if (!mkdtemp(dir)) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		fuzz_fail(__FILE__, __LINE__, "mkdtemp in /dev/shm");
	}
	return dir;
}

void fuzz_rmdir(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d;

	if (!dir || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

void fuzz_write_seed(const char *dir, const char *name, const void *b,
		     size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	FUZZ_CHECK(f && fwrite(b, 1, n, f) == n);
	fclose(f);
}

void seed_put(struct seed *sd, const void *p, size_t n)
{
	FUZZ_CHECK(sd->n + n <= sizeof(sd->b));
	memcpy(sd->b + sd->n, p, n);
	sd->n += n;
}

void seed_put8(struct seed *sd, unsigned v)
{
	uint8_t b = (uint8_t)v;

	seed_put(sd, &b, 1);
}

void seed_put16(struct seed *sd, unsigned v)
{
	seed_put8(sd, v & 0xff);
	seed_put8(sd, v >> 8);
}

void seed_put32(struct seed *sd, uint32_t v)
{
	seed_put16(sd, v & 0xffff);
	seed_put16(sd, v >> 16);
}

void seed_put64(struct seed *sd, uint64_t v)
{
	seed_put32(sd, (uint32_t)v);
	seed_put32(sd, (uint32_t)(v >> 32));
}
