/* SPDX-License-Identifier: MIT */
/* busfile.c - reading and writing the bus file (see busfile.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "busfile.h"
#include "channel.h"

const char *sb_run_dir(void)
{
	/* Not for a set-uid program: its caller's environment is not its
	 * own to trust. */
	const char *d = secure_getenv("SHMBUS_RUN_DIR");

	return d && *d ? d : SB_DEFAULT_RUN_DIR;
}

int sb_bus_name_ok(const char *name)
{
	return sb_name_ok(name, 63);
}

int sb_busfile_path_for(const char *socket, const char *bus, char *out,
			size_t len)
{
	const char *slash = strrchr(socket, '/');
	int dirlen = slash ? (int)(slash - socket) : 1;
	int n;

	if (!slash)
		socket = ".";
	n = snprintf(out, len, "%.*s/%s.bus", dirlen, socket, bus);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* An absolute path of printable characters, shorter than cap. */
static int take_path(char *dst, size_t cap, const char *v)
{
	size_t n = strlen(v);

	if (v[0] != '/' || n >= cap)
		return -EBADMSG;
	memcpy(dst, v, n + 1);
	return 0;
}

/*
 * Whether the bus file's owner may speak for the bus: root, ourselves, or
 * the owner of the directory that holds it (the daemon's user, in a run
 * directory of its own) when nobody else may write there.  Otherwise any
 * user who can write a file in a shared directory could point every
 * client at a daemon of their own.
 */
static bool owner_trusted(const char *path, const struct stat *st)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat ds;
	int n;

	if (st->st_uid == 0 || st->st_uid == geteuid())
		return true;
	n = slash ? (int)(slash - path) : 1;
	if (snprintf(dir, sizeof(dir), "%.*s", n ? n : 1,
		     slash ? path : ".") >= (int)sizeof(dir))
		return false;
	return stat(dir, &ds) == 0 && ds.st_uid == st->st_uid &&
	       !(ds.st_mode & (S_IWGRP | S_IWOTH));
}

int sb_busfile_read(const char *path, const char *bus, struct sb_busfile *bf)
{
	char buf[SB_BUSFILE_MAX + 1], *line, *save = NULL;
	int version = 0, rc = 0;
	struct stat st;
	ssize_t n;
	int fd;

	memset(bf, 0, sizeof(*bf));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ELOOP ? -EBADMSG : -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	/* Not a FIFO or a device, not a file others may rewrite, from an
	 * owner who may speak for the bus. */
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
	    st.st_size > SB_BUSFILE_MAX || !owner_trusted(path, &st)) {
		rc = -EBADMSG;
		goto out;
	}
	n = read(fd, buf, SB_BUSFILE_MAX + 1);
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	if (n > SB_BUSFILE_MAX || memchr(buf, 0, (size_t)n)) {
		rc = -EBADMSG;
		goto out;
	}
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line && !rc;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq, *v;

		for (char *p = line; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				rc = -EBADMSG;
		if (rc || line[0] == '#')
			continue;
		eq = strchr(line, '=');
		if (!eq) {
			rc = -EBADMSG;
			break;
		}
		*eq = 0;
		v = eq + 1;
		if (!strcmp(line, "version")) {
			version = strcmp(v, "1") ? -1 : 1;
		} else if (!strcmp(line, "bus")) {
			if (!sb_bus_name_ok(v))
				rc = -EBADMSG;
			else
				strcpy(bf->bus, v);
		} else if (!strcmp(line, "socket")) {
			rc = take_path(bf->socket, sizeof(bf->socket), v);
		} else if (!strcmp(line, "shm_dir")) {
			rc = take_path(bf->shm_dir, sizeof(bf->shm_dir), v);
		} else if (!strcmp(line, "pid")) {
			char *end;
			long pid = strtol(v, &end, 10);

			if (end == v || *end || pid <= 0 || pid > 0x3fffffff)
				rc = -EBADMSG;
			else
				bf->pid = pid;
		}
		/* Other keys: a later version's; skipped. */
	}
	if (!rc && (version != SB_BUSFILE_VERSION || !bf->bus[0] ||
		    !bf->socket[0] || !bf->shm_dir[0] ||
		    (bus && strcmp(bus, bf->bus))))
		rc = -EBADMSG;
out:
	close(fd);
	if (rc)
		memset(bf, 0, sizeof(*bf));
	return rc;
}

int sb_busfile_write(const char *path, const struct sb_busfile *bf)
{
	char tmp[PATH_MAX];
	FILE *f;
	int n, fd, rc = 0;

	/* A value with a newline would make another line. */
	if (strchr(bf->socket, '\n') || strchr(bf->shm_dir, '\n') ||
	    !sb_bus_name_ok(bf->bus))
		return -EINVAL;
	n = snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	/* Made by us alone, with its final mode from the start: a file that
	 * is there already (a crashed daemon's, or someone's plant) is
	 * removed, never written through, and nobody else can hold it open
	 * for writing between its creation and its rename. */
	for (int tries = 0;; tries++) {
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
			  O_CLOEXEC, 0644);
		if (fd >= 0 || errno != EEXIST || tries)
			break;
		unlink(tmp);
	}
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0644) < 0 || !(f = fdopen(fd, "w"))) {
		rc = -errno;
		close(fd);
		unlink(tmp);
		return rc;
	}
	fprintf(f, "# written by shmbusd at start: where bus '%s' lives\n"
		   "version=%d\nbus=%s\nsocket=%s\nshm_dir=%s\npid=%ld\n",
		bf->bus, SB_BUSFILE_VERSION, bf->bus, bf->socket,
		bf->shm_dir, bf->pid);
	if (fflush(f) != 0 || fsync(fileno(f)) < 0)
		rc = -errno;
	if (fclose(f) != 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

SHMBUS_EXPORT int shmbus_bus_dir(const char *bus, char *dir, size_t len)
{
	struct sb_busfile bf;
	char path[PATH_MAX];
	int n, rc;

	if (!sb_bus_name_ok(bus) || !dir || !len)
		return -EINVAL;
	n = snprintf(path, sizeof(path), "%s/%s.bus", sb_run_dir(), bus);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	rc = sb_busfile_read(path, bus, &bf);
	if (rc == 0)
		n = snprintf(dir, len, "%s", bf.shm_dir);
	else if (rc == -ENOENT)
		n = snprintf(dir, len, "%s%s", SB_DEFAULT_SHM_PREFIX, bus);
	else
		return rc;
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return rc == 0;
}
