/* SPDX-License-Identifier: MIT */
/*
 * dirs.c - whose the daemon's directories may be (shm_dir, the socket's,
 * state_dir): a rule main.c applies at start and epochs.c before it
 * reads or writes the epoch history.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shmbusd.h"

/*
 * Whether the daemon may keep its bus in directory `path`: it and every
 * directory above it is a real directory (no symbolic link), owned by
 * root or by the daemon's user, that no other user may write to, but for
 * a root-owned sticky directory such as /dev/shm or /tmp (where others may
 * not remove or rename what is ours).  A directory that another user made
 * or can change (in world-writable /dev/shm anyone could have made
 * /dev/shm/shmbus-NAME first) could hold their channel files or swap
 * ours.  Returns 0, or -1 with a log line naming the directory.
 */
int sbd_dir_is_ours(const char *path)
{
	char buf[PATH_MAX];
	uid_t me = geteuid();
	size_t n = strlen(path);

	if (path[0] != '/' || n >= sizeof(buf)) {
		sbd_log(SBD_ERR, 0, "%s: not an absolute path", path);
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		struct stat st;
		bool sticky_root;

		if (buf[i] != '/' && buf[i] != 0)
			continue;
		buf[i] = 0;
		if (lstat(buf, &st) < 0) {
			sbd_log(SBD_ERR, errno, "%s", buf);
			return -1;
		}
		sticky_root = st.st_uid == 0 && (st.st_mode & S_ISVTX);
		if (!S_ISDIR(st.st_mode) || (st.st_uid != 0 && st.st_uid != me) ||
		    ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_root)) {
			sbd_log(SBD_ERR, 0, "%s: refused: %s", buf,
				!S_ISDIR(st.st_mode) ? "not a directory (a "
				"symbolic link?)" :
				st.st_uid != 0 && st.st_uid != me ?
				"owned by another user" :
				"writable by other users");
			return -1;
		}
		buf[i] = i < n ? '/' : 0;
	}
	return 0;
}

/*
 * The same rule for a directory that may be reached through symbolic
 * links (state_dir and journal_dir, linked to a data volume say): every
 * level of `path` as written, where it resolves to, must pass
 * sbd_dir_is_ours(), and a level that is a link must be root's or the
 * daemon's user's.  So a link is followed only from a directory no
 * other user can change, and leads only to such a one: a link that
 * another user put in a directory of theirs (/tmp/x/journal -> /etc),
 * or in a root-owned sticky one that every user may add to (/tmp/x ->
 * /etc, which the kernel follows unless fs.protected_symlinks is set),
 * is refused, though its target would pass.  Returns 0, or -1 with a
 * log line.
 */
int sbd_path_is_ours(const char *path)
{
	char buf[PATH_MAX], real[PATH_MAX];
	uid_t me = geteuid();
	size_t n = strlen(path);

	if (path[0] != '/' || n >= sizeof(buf)) {
		sbd_log(SBD_ERR, 0, "%s: not an absolute path", path);
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		struct stat st;

		if (buf[i] != '/' && buf[i] != 0)
			continue;
		buf[i] = 0;
		if (lstat(buf, &st) < 0 || !realpath(buf, real)) {
			sbd_log(SBD_ERR, errno, "%s", buf);
			return -1;
		}
		if (S_ISLNK(st.st_mode) && st.st_uid != 0 && st.st_uid != me) {
			sbd_log(SBD_ERR, 0, "%s: refused: a symbolic link "
				"owned by another user", buf);
			return -1;
		}
		if (sbd_dir_is_ours(real) < 0)
			return -1;
		buf[i] = i < n ? '/' : 0;
	}
	return 0;
}
