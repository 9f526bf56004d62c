/* SPDX-License-Identifier: MIT */
/*
 * test_attr.c - the one max_msg rule (shmbus_max_msg()), the default
 * max_msg derived from the capacity, shmbus_channel_attr_check()'s words
 * for each limit, and the error strings that say what happened.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <errno.h>
#include <string.h>

#include "helpers.h"
#include "shmbus/layout.h"

Test(attr, the_max_msg_rule)
{
	cr_assert_eq(shmbus_max_msg(4096), 4096 / 2 - 32);
	cr_assert_eq(shmbus_max_msg(65536), 32736);
	cr_assert_eq(shmbus_max_msg(UINT64_C(1) << 20), (1u << 19) - 32);
	cr_assert_eq(shmbus_max_msg(UINT64_C(16) << 30), SHMBUS_MAX_MSG_LIMIT);
	/* Not a capacity: no rule. */
	cr_assert_eq(shmbus_max_msg(0), 0);
	cr_assert_eq(shmbus_max_msg(5000), 0);
	cr_assert_eq(shmbus_max_msg(2048), 0);
	cr_assert_eq(shmbus_max_msg(UINT64_C(32) << 30), 0);
}

/* attr_init() and a small capacity: no max_msg to adjust. */
Test(attr, the_default_max_msg_follows_the_capacity)
{
	const char *dir = th_mkdir();
	struct shmbus_channel_attr a;
	struct shmbus_channel_info in;
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	cr_assert_eq(shmbus_channel_attr_check(&a, NULL, 0), 0);
	a.capacity = 8192;
	ch = shmbus_channel_create(dir, "small", &a, 0);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.max_msg, shmbus_max_msg(8192));
	/* The same attributes open it again (same geometry). */
	shmbus_channel_close(ch);
	ch = shmbus_channel_create(dir, "small", &a, 0);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	shmbus_channel_close(ch);
	a.capacity = 1u << 20;
	ch = shmbus_channel_create(dir, "large", &a, 0);
	cr_assert(ch);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.max_msg, SHMBUS_DEFAULT_MAX_MSG);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(attr, each_limit_is_named_with_what_is_allowed)
{
	const char *dir = th_mkdir();
	struct shmbus_channel_attr a;
	char why[256];
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	a.capacity = 65536;
	a.max_msg = 32736;		/* the largest allowed */
	ch = shmbus_channel_create(dir, "edge", &a, 0);
	cr_assert(ch, "%s", shmbus_strerror(errno));
	shmbus_channel_close(ch);
	a.max_msg = 32737;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)),
		     -EMSGSIZE);
	cr_assert(strstr(why, "max_msg 32737 is too large for capacity 65536")
		  && strstr(why, "at most 32736"), "%s", why);
	cr_assert_null(shmbus_channel_create(dir, "over", &a, 0));
	cr_assert_eq(errno, EMSGSIZE);

	shmbus_channel_attr_init(&a);
	a.capacity = 5000;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "capacity 5000 is not a power of two from 4 KiB "
			 "to 16 GiB"), "%s", why);
	a.capacity = UINT64_C(32) << 30;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "(32 GiB) is more than 16 GiB"), "%s", why);
	a.capacity = 2048;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "less than 4 KiB"), "%s", why);
	shmbus_channel_attr_init(&a);
	a.numa_node = 4096;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "NUMA node 4096 does not exist"), "%s", why);
	shmbus_channel_attr_init(&a);
	a.policy = (enum shmbus_policy)7;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "policy 7"), "%s", why);
	shmbus_channel_attr_init(&a);
	a.mode = 01777;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)), -EINVAL);
	/* The owner opens the files read-write: the rule shmbusd applies
	 * too, one rule for both. */
	for (mode_t m = 0; m <= 0777; m++) {
		int want = m == 0 || (m & 0600) == 0600 ? 0 : -EINVAL;

		a.mode = m;
		strcpy(why, "left over");
		cr_assert_eq(shmbus_channel_attr_check(&a, why, sizeof(why)),
			     want, "mode %o", (unsigned)m);
		if (want)
			cr_assert(strstr(why, "the owner's read and write"),
				  "mode %o: %s", (unsigned)m, why);
		else
			cr_assert_str_empty(why, "mode %o: %s", (unsigned)m,
					    why);
	}
	a.mode = 0400;
	cr_assert_null(shmbus_channel_create(dir, "ro", &a, 0));
	cr_assert_eq(errno, EINVAL);
	a.mode = 0600;
	cr_assert_eq(shmbus_channel_attr_check(NULL, why, sizeof(why)),
		     -EINVAL);
	/* A short buffer is cut, still NUL-terminated. */
	a.mode = 0600;
	a.capacity = 5000;
	cr_assert_eq(shmbus_channel_attr_check(&a, why, 8), -EINVAL);
	cr_assert_eq(strlen(why), 7);
	th_rmdir(dir);
}

/* The strings say what happened, in the caller's words. */
Test(attr, error_strings)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 8192, 100, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	char small[4];

	cr_assert_eq(shmbus_publish(pub, "0123456789", 10), 0);
	cr_assert_eq(shmbus_read(sub, small, sizeof(small), NULL), -EMSGSIZE);
	cr_assert(strstr(shmbus_strerror(-EMSGSIZE), "buffer"), "%s",
		  shmbus_strerror(-EMSGSIZE));
	cr_assert(!strstr(shmbus_strerror(-EEXIST), "CREATE_EXCL"), "%s",
		  shmbus_strerror(-EEXIST));
	cr_assert(strstr(shmbus_strerror(-ENOTCONN), "shmbusd"), "%s",
		  shmbus_strerror(-ENOTCONN));
	/* Any int at all (INT_MIN has no positive: UBSan's check). */
	cr_assert_str_eq(shmbus_strerror(INT_MIN), "unknown error");
	cr_assert_str_eq(shmbus_strerror(INT_MAX), "unknown error");
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/* A NULL bus is "no daemon", so that nesting a failed shmbus_connect()
 * reports the failed connection, never EINVAL. */
Test(attr, a_null_bus_is_not_connected)
{
	struct shmbus_channel_attr a;
	struct shmbus_bus_channel c;

	setenv("SHMBUS_CONNECT_TIMEOUT_MS", "0", 1);
	errno = 0;
	cr_assert_null(shmbus_bus_open(shmbus_connect("/nonexistent/x.sock"),
				       "ch", SHMBUS_ROLE_SUBSCRIBE));
	cr_assert_eq(errno, ENOTCONN);
	shmbus_channel_attr_init(&a);
	cr_assert_eq(shmbus_bus_create(NULL, "x", &a), -ENOTCONN);
	cr_assert_eq(shmbus_bus_delete(NULL, "x"), -ENOTCONN);
	cr_assert_eq(shmbus_bus_describe(NULL, "x", &c), -ENOTCONN);
	cr_assert_str_eq(shmbus_bus_strerror(NULL, -ENOTCONN),
			 shmbus_strerror(ENOTCONN));
}
