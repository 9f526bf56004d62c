/* SPDX-License-Identifier: MIT */
/* version.c - shmbus_version(): the loaded library's version, made from
 * the SHMBUS_VERSION_* macros of include/shmbus.h. */
#include "channel.h"

#define SB_STR_(x) #x
#define SB_STR(x) SB_STR_(x)

SHMBUS_EXPORT const char *shmbus_version(void)
{
	return SB_STR(SHMBUS_VERSION_MAJOR) "." SB_STR(SHMBUS_VERSION_MINOR)
		"." SB_STR(SHMBUS_VERSION_PATCH);
}
