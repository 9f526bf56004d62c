/* SPDX-License-Identifier: MIT */
/* error.c - shmbus_strerror(): what each return value means here. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "channel.h"

SHMBUS_EXPORT const char *shmbus_strerror(int err)
{
	const char *s;

	if (err == INT_MIN)
		return "unknown error";	/* it has no positive */
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
		return "too large: a message above the channel's max_msg or "
		       "the buffer given, or a max_msg above what the "
		       "capacity allows (capacity/2 - 32)";
	case EAGAIN:
		return "nothing to read, or channel full (or, from a connect, "
		       "no thread could be started)";
	case ETIMEDOUT:
		return "timed out";
	case EBUSY:
		return "single-producer channel already has a live producer, "
		       "or a claim is outstanding";
	case ENOSPC:
		return "no free subscriber or producer slot (or group member "
		       "record), or no space left in the shm directory";
	case EEXIST:
		return "a channel of that name exists (with another geometry, "
		       "or creation was asked to be exclusive)";
	case ENOTCONN:
		return "no connection to shmbusd (the daemon is not running "
		       "or went away, or no bus handle was given)";
	default:
		s = strerrordesc_np(err);
		return s ? s : "unknown error";
	}
}
