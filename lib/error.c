/* SPDX-License-Identifier: MIT */
/* error.c - shmbus_strerror(): what each return value means here. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "channel.h"

SHMBUS_EXPORT const char *shmbus_strerror(int err)
{
	const char *s;

	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "success";
	case EBADMSG:
		return "corrupt channel: a value in shared memory is out of bounds";
	case EPROTO:
		return "not a shmbus channel (bad magic or truncated file)";
	case EPROTONOSUPPORT:
		return "channel made by an incompatible shmbus layout version";
	case EMSGSIZE:
		return "message larger than the channel's maximum";
	case EAGAIN:
		return "nothing to read, or channel full";
	case ETIMEDOUT:
		return "timed out";
	case EBUSY:
		return "single-producer channel already has a live producer, "
		       "or a claim is outstanding";
	case ENOSPC:
		return "no free subscriber or producer slot, or shm directory full";
	case EEXIST:
		return "channel exists (with another geometry, or CREATE_EXCL)";
	default:
		s = strerrordesc_np(err);
		return s ? s : "unknown error";
	}
}
