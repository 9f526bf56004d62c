/* examples/sub.c - receive N messages, sleeping on the futex between them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "shmbus.h"

static int print_msg(const struct shmbus_msg *m, void *arg)
{
	int *left = arg;

	printf("sub: seq %llu: %.*s\n", (unsigned long long)m->seq,
	       (int)m->len, (const char *)m->data);
	return --*left == 0;	/* stop the batch when done */
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/dev/shm";
	int left = argc > 2 ? atoi(argv[2]) : 10;
	struct shmbus_channel_attr attr;
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = SHMBUS_WAIT_SLEEP };
	shmbus_channel *ch;
	shmbus_sub *sub;

	shmbus_channel_attr_init(&attr);
	ch = shmbus_channel_create(dir, "demo", &attr, 0);
	if (!ch || !(sub = shmbus_sub_open(ch, &sa))) {
		fprintf(stderr, "sub: %s\n", shmbus_strerror(errno));
		return 1;
	}
	while (left > 0) {
		int rc = shmbus_wait(sub, 5 * 1000000000LL);

		if (rc == 0)
			rc = shmbus_poll(sub, print_msg, &left, 0);
		if (rc < 0) {
			fprintf(stderr, "sub: %s\n", shmbus_strerror(rc));
			return 1;
		}
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	return 0;
}
