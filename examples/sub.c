/* examples/sub.c - receive N messages, sleeping on the futex between them.
 *
 *   sub [-b BUS] [-c CHANNEL] [DIR [N]]
 *
 * With -b, the channel is opened through shmbusd (its messages are then
 * mapped read-only); without it, in direct mode in DIR. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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
	const char *bus_name = NULL, *name = "demo", *dir;
	struct shmbus_channel_attr attr;
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = SHMBUS_WAIT_SLEEP };
	shmbus_bus *bus = NULL;
	shmbus_channel *ch;
	shmbus_sub *sub = NULL;
	int left, opt;

	while ((opt = getopt(argc, argv, "b:c:")) != -1) {
		if (opt == 'b')
			bus_name = optarg;
		else if (opt == 'c')
			name = optarg;
		else
			return 2;
	}
	dir = optind < argc ? argv[optind] : "/dev/shm";
	left = optind + 1 < argc ? atoi(argv[optind + 1]) : 10;
	if (bus_name) {
		bus = shmbus_connect(bus_name);
		ch = bus ? shmbus_bus_open(bus, name, SHMBUS_ROLE_SUBSCRIBE)
			 : NULL;
	} else {
		shmbus_channel_attr_init(&attr);
		ch = shmbus_channel_create(dir, name, &attr, 0);
	}
	if (!ch || !(sub = shmbus_sub_open(ch, &sa))) {
		fprintf(stderr, "sub: %s: %s\n", name, shmbus_strerror(errno));
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
	shmbus_disconnect(bus);
	return 0;
}
