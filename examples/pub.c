/* examples/pub.c - publish N numbered messages on a channel.
 *
 *   pub [-b BUS] [-c CHANNEL] [-s] [DIR [N [GAP_MS]]]
 *
 * With -b, the channel is opened through shmbusd (BUS is a bus name or the
 * daemon's socket path); without it, in direct mode in DIR.  With -s, each
 * message is published and then waited for with shmbus_pub_sync(), until
 * the channel's replication level acknowledges it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"

int main(int argc, char **argv)
{
	const char *bus_name = NULL, *name = "demo", *dir;
	struct shmbus_channel_attr attr;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 }; /* wait when full */
	shmbus_bus *bus = NULL;
	shmbus_channel *ch;
	shmbus_pub *pub = NULL;
	char msg[64];
	int n, gap_ms, opt, sync = 0, degraded = 0;

	while ((opt = getopt(argc, argv, "b:c:s")) != -1) {
		if (opt == 'b')
			bus_name = optarg;
		else if (opt == 'c')
			name = optarg;
		else if (opt == 's')
			sync = 1;
		else
			return 2;
	}
	dir = optind < argc ? argv[optind] : "/dev/shm";
	n = optind + 1 < argc ? atoi(argv[optind + 1]) : 10;
	gap_ms = optind + 2 < argc ? atoi(argv[optind + 2]) : 1;
	if (bus_name) {
		bus = shmbus_connect(bus_name);
		ch = bus ? shmbus_bus_open(bus, name, SHMBUS_ROLE_PUBLISH)
			 : NULL;
	} else {
		shmbus_channel_attr_init(&attr);
		ch = shmbus_channel_create(dir, name, &attr, 0);
	}
	if (!ch || !(pub = shmbus_pub_open(ch, &pa))) {
		fprintf(stderr, "pub: %s: %s\n", name, shmbus_strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		int len = snprintf(msg, sizeof(msg), "hello #%d", i);
		int rc = shmbus_publish(pub, msg, (size_t)len);

		if (rc == 0 && sync)
			rc = shmbus_pub_sync(pub, 5000000000LL);
		if (rc == SHMBUS_SYNC_DEGRADED) {
			degraded++;	/* committed here; the standby is out
					 * of sync */
			rc = 0;
		}
		if (rc) {
			fprintf(stderr, "publish #%d: %s\n", i,
				shmbus_strerror(rc));
			return 1;
		}
		if (gap_ms)
			usleep((useconds_t)gap_ms * 1000);
	}
	printf("pub: published %d messages", n);
	if (sync)
		printf(", each acknowledged (%d of them only locally: the "
		       "standby was out of sync)", degraded);
	printf("\n");
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}
