/* examples/pub.c - publish N numbered messages on a channel (direct mode):
 * pub [DIR [N [GAP_MS]]] */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/dev/shm";
	int n = argc > 2 ? atoi(argv[2]) : 10;
	int gap_ms = argc > 3 ? atoi(argv[3]) : 1;	/* between messages */
	struct shmbus_channel_attr attr;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 }; /* wait when full */
	shmbus_channel *ch;
	shmbus_pub *pub;
	char msg[64];

	shmbus_channel_attr_init(&attr);
	ch = shmbus_channel_create(dir, "demo", &attr, 0);
	if (!ch || !(pub = shmbus_pub_open(ch, &pa))) {
		fprintf(stderr, "pub: %s\n", shmbus_strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		int len = snprintf(msg, sizeof(msg), "hello #%d", i);
		int rc = shmbus_publish(pub, msg, (size_t)len);

		if (rc) {
			fprintf(stderr, "publish: %s\n", shmbus_strerror(rc));
			return 1;
		}
		usleep((useconds_t)gap_ms * 1000);
	}
	printf("pub: published %d messages\n", n);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return 0;
}
