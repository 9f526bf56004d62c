/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - what the libFuzzer harnesses share, and how the Criterion
 * suite replays their inputs (tests/test_fuzz_regress.c).
 *
 * Each harness fuzz/fuzz_NAME.c defines fuzz_NAME_one(), which runs one
 * input and returns 0 (a broken invariant aborts), and fuzz_NAME_cleanup(),
 * which removes what its setup made in /dev/shm.  Built for libFuzzer it
 * also defines LLVMFuzzerTestOneInput(); built with
 * -DSHMBUS_FUZZ_NO_ENTRY (the suite) it does not.  See docs/fuzzing.md.
 */
#ifndef SHMBUS_FUZZ_H
#define SHMBUS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int fuzz_channel_one(const uint8_t *data, size_t size);
void fuzz_channel_cleanup(void);
int fuzz_control_one(const uint8_t *data, size_t size);
void fuzz_control_cleanup(void);
int fuzz_config_one(const uint8_t *data, size_t size);
void fuzz_config_cleanup(void);
int fuzz_frames_one(const uint8_t *data, size_t size);
void fuzz_frames_cleanup(void);
int fuzz_group_one(const uint8_t *data, size_t size);
void fuzz_group_cleanup(void);
int fuzz_journal_one(const uint8_t *data, size_t size);
void fuzz_journal_cleanup(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A harness's own checks: an invariant the code under test broke.  Not
 * assert(): it must hold in every build. */
#define FUZZ_CHECK(cond)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fuzz_fail(__FILE__, __LINE__, #cond);                \
	} while (0)

void fuzz_fail(const char *file, int line, const char *what)
	__attribute__((noreturn));

/* A private directory in /dev/shm (shmbus-fuzz-*), made once per process;
 * fuzz_rmdir() removes it and everything in it. */
const char *fuzz_mkdir(const char *what);
void fuzz_rmdir(const char *dir);

/* A seed being written (make fuzz-seeds): bytes appended little-endian;
 * a seed that would not fit is a bug of its generator (FUZZ_CHECK). */
struct seed {
	uint8_t b[32768];
	size_t n;
};

void seed_put(struct seed *sd, const void *p, size_t n);
void seed_put8(struct seed *sd, unsigned v);
void seed_put16(struct seed *sd, unsigned v);
void seed_put32(struct seed *sd, uint32_t v);
void seed_put64(struct seed *sd, uint64_t v);

/* Writes a seed file dir/name of n bytes (make fuzz-seeds). */
void fuzz_write_seed(const char *dir, const char *name, const void *b,
		     size_t n);

/* A reader of the input's bytes that runs dry into zeros. */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	uint8_t v = 0;

	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t lo = fuzz_u8(in);

	return (uint16_t)(lo | fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t lo = fuzz_u16(in);

	return lo | (uint32_t)fuzz_u16(in) << 16;
}

#endif /* SHMBUS_FUZZ_H */
