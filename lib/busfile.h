/* SPDX-License-Identifier: MIT */
/*
 * busfile.h - the bus file: where a bus lives, for those who know only its
 * name.
 *
 * shmbusd writes it when it starts, beside its control socket, as
 * BUS.bus (so /run/shmbus/BUS.bus by default):
 *
 *     # written by shmbusd at start: where bus 'demo' lives
 *     version=1
 *     bus=demo
 *     socket=/run/shmbus/demo.sock
 *     shm_dir=/dev/shm/shmbus-demo
 *     pid=4242
 *
 * shmbus_connect("demo") takes the socket from it, and busstat the channel
 * directory, from $SHMBUS_RUN_DIR/demo.bus (default /run/shmbus).  It is
 * written to a temporary name and renamed, so a reader sees a whole file
 * or none; it stays when the daemon stops (the channels stay too, and
 * busstat still finds them).  A reader treats it as untrusted input: a
 * regular file of at most SB_BUSFILE_MAX bytes, not writable by others,
 * every line "key=value" of printable characters, absolute paths of
 * bounded length, the bus name it was asked for; unknown keys are skipped
 * (a later version may add some).
 */
#ifndef SHMBUS_BUSFILE_H
#define SHMBUS_BUSFILE_H

#include <limits.h>
#include <stddef.h>

#define SB_BUSFILE_VERSION	1
#define SB_BUSFILE_MAX		4096
#define SB_DEFAULT_RUN_DIR	"/run/shmbus"
#define SB_DEFAULT_SHM_PREFIX	"/dev/shm/shmbus-"

struct sb_busfile {
	char bus[64];
	char socket[108];	/* sizeof(sockaddr_un.sun_path) */
	char shm_dir[PATH_MAX];
	long pid;		/* the daemon that wrote it, 0 if not given */
};

/* $SHMBUS_RUN_DIR, or /run/shmbus. */
const char *sb_run_dir(void);

/* Whether `name` is a bus name: 1 to 63 of [A-Za-z0-9._-], not starting
 * with '.'. */
int sb_bus_name_ok(const char *name);

/* The bus file of a daemon whose socket is `socket`: BUS.bus in the
 * socket's directory.  0 or -ENAMETOOLONG. */
int sb_busfile_path_for(const char *socket, const char *bus, char *out,
			size_t len);

/* Reads and validates the bus file at `path`; `bus`, if not NULL, is the
 * name it must carry.  0, or -errno: -ENOENT (none), -EACCES, -EBADMSG
 * (not a valid bus file: too large, writable by others, a malformed line
 * or value, no socket or shm_dir, another bus's). */
int sb_busfile_read(const char *path, const char *bus, struct sb_busfile *bf);

/* Writes it at `path` (temporary file, then rename), mode 0644.  0 or
 * -errno. */
int sb_busfile_write(const char *path, const struct sb_busfile *bf);

#endif /* SHMBUS_BUSFILE_H */
