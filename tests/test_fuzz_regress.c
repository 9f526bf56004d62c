/* SPDX-License-Identifier: MIT */
/*
 * test_fuzz_regress.c - the fuzzers' inputs, replayed by the suite.
 *
 * Every input that once broke a harness is kept in fuzz/regress/NAME/
 * (docs/fuzzing.md); this test runs each of them, and the seed corpus
 * fuzz/corpus/NAME/, through the same harness code that libFuzzer drives
 * (fuzz/fuzz_NAME.c, built here without libFuzzer's entry point).  A
 * harness aborts on a broken invariant, and the sanitizers of make
 * sanitize see every access, so a regression fails here without clang.
 * Run from the top of the source tree, as make test does.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../daemon/repl.h"
#include "../fuzz/fuzz.h"

typedef int (*one_fn)(const uint8_t *data, size_t size);

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	FILE *f = fopen(path, "rb");

	cr_assert(f, "%s: %s", path, strerror(errno));
	cr_assert(fstat(fileno(f), &st) == 0);
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	cr_assert(buf);
	cr_assert(fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size);
	fclose(f);
	*len = (size_t)st.st_size;
	return buf;
}

/* Runs every file of dir through one(); returns how many.  `loud` names
 * each file first, so that a crash says which input it was. */
static unsigned replay_dir(const char *dir, one_fn one, bool loud)
{
	char path[PATH_MAX];
	struct dirent *e;
	unsigned n = 0;
	DIR *d = opendir(dir);

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		uint8_t *buf;
		size_t len;

		if (e->d_name[0] == '.' || !strcmp(e->d_name, "README"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (loud)
			fprintf(stderr, "replaying %s\n", path);
		buf = slurp(path, &len);
		cr_assert_eq(one(buf, len), 0, "%s", path);
		free(buf);
		n++;
	}
	closedir(d);
	return n;
}

static void replay(const char *target, one_fn one, void (*cleanup)(void))
{
	char dir[PATH_MAX];
	unsigned n;

	snprintf(dir, sizeof(dir), "fuzz/corpus/%s", target);
	n = replay_dir(dir, one, false);
	cr_assert(n > 0, "no seed corpus in %s (run from the source tree)",
		  dir);
	snprintf(dir, sizeof(dir), "fuzz/regress/%s", target);
	replay_dir(dir, one, true);
	cleanup();
}

Test(fuzz_regress, channel_images, .timeout = 300)
{
	replay("channel", fuzz_channel_one, fuzz_channel_cleanup);
}

Test(fuzz_regress, control_requests, .timeout = 300)
{
	replay("control", fuzz_control_one, fuzz_control_cleanup);
}

Test(fuzz_regress, config_files, .timeout = 300)
{
	replay("config", fuzz_config_one, fuzz_config_cleanup);
}

Test(fuzz_regress, replication_frames, .timeout = 300)
{
	replay("frames", fuzz_frames_one, fuzz_frames_cleanup);
}

/* The frame seeds are of this build's frame version: a seed of another
 * stops at the header's check and tests nothing behind it. */
Test(fuzz_regress, the_frame_seeds_are_of_this_version)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir("fuzz/corpus/frames");

	cr_assert(d);
	while ((e = readdir(d))) {
		uint8_t *buf;
		size_t len, o = 1;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "fuzz/corpus/frames/%s",
			 e->d_name);
		buf = slurp(path, &len);
		while (len - o >= sizeof(struct rw_hdr)) {
			struct rw_hdr h;

			memcpy(&h, buf + o, sizeof(h));
			cr_assert_eq(h.version, RW_VERSION, "%s: a frame of "
				     "version %u", path, h.version);
			o += sizeof(h) + h.len;
			if (o > len)
				break;
		}
		free(buf);
	}
	closedir(d);
}

Test(fuzz_regress, group_files, .timeout = 300)
{
	replay("group", fuzz_group_one, fuzz_group_cleanup);
}

Test(fuzz_regress, journal_files, .timeout = 300)
{
	replay("journal", fuzz_journal_one, fuzz_journal_cleanup);
}
