/* SPDX-License-Identifier: MIT */
/*
 * test_alloc.c - no allocation per message.  This binary is linked with
 * --wrap for malloc, calloc, realloc, free and posix_memalign (see the
 * Makefile), so every call the library makes to the allocator from this
 * thread is counted.  Opening handles may allocate; publishing, claiming,
 * committing, batching, polling, reading and waiting must not.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static __thread unsigned long allocs;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
int __real_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n)
{
	allocs++;
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
	allocs++;
	return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
	allocs++;
	return __real_realloc(p, n);
}

void __wrap_free(void *p)
{
	if (p)
		allocs++;
	__real_free(p);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
	allocs++;
	return __real_posix_memalign(p, a, n);
}

static int consume(const struct shmbus_msg *m, void *arg)
{
	*(uint64_t *)arg += m->len;
	return 0;
}

static void hot_paths(enum shmbus_policy pol, enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 512, pol, prod);
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP };
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	uint8_t msg[512], got[512];
	struct iovec iov[4];
	uint64_t sum = 0;
	unsigned long before;
	void *buf;

	cr_assert(pub && sub);
	memset(msg, 7, sizeof(msg));
	for (int i = 0; i < 4; i++) {
		iov[i].iov_base = msg;
		iov[i].iov_len = 10 + (size_t)i;
	}
	before = allocs;
	for (int i = 0; i < 20000; i++) {
		size_t len = (size_t)(i % 500);

		cr_assert_eq(shmbus_publish(pub, msg, len), 0);
		cr_assert_eq(shmbus_claim(pub, len, &buf), 0);
		memcpy(buf, msg, len);
		cr_assert_eq(shmbus_commit(pub), 0);
		cr_assert_eq(shmbus_claim(pub, 8, &buf), 0);
		cr_assert_eq(shmbus_abort(pub), 0);
		cr_assert_eq(shmbus_publishv(pub, iov, 4), 0);
		cr_assert_eq(shmbus_publish_batch(pub, iov, 4), 4);
		cr_assert_eq(shmbus_wait(sub, 0), 0);
		cr_assert_gt(shmbus_poll(sub, consume, &sum, 3), 0);
		while (shmbus_read(sub, got, sizeof(got), NULL) >= 0)
			;
	}
	cr_assert_eq(allocs, before, "%lu allocator calls on the hot paths",
		     allocs - before);
	cr_assert_gt(sum, 0);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(alloc, none_per_message_block_sp)
{
	hot_paths(SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

Test(alloc, none_per_message_overwrite_mp)
{
	hot_paths(SHMBUS_OVERWRITE, SHMBUS_MULTI_PRODUCER);
}

/* The control: opening a subscriber does allocate, and is counted, so
 * the wrapper sees the library's calls. */
Test(alloc, the_counter_sees_the_library)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 512, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	unsigned long before = allocs;
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);

	cr_assert(sub);
	cr_assert_gt(allocs, before, "the wrapper is not linked in");
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
