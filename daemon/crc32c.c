/* SPDX-License-Identifier: MIT */
/*
 * crc32c.c - CRC-32C (Castagnoli) with the SSE 4.2 instruction, for the
 * replication frames.  No table: the processor computes it, 8 bytes an
 * instruction.  sbd_crc32c_ok() says whether this processor can; the
 * replication agent refuses to start where it cannot.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "repl.h"

bool sbd_crc32c_ok(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2"))) uint32_t
sbd_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	for (; len >= 8; len -= 8, p += 8) {
		uint64_t v;

		memcpy(&v, p, sizeof(v));
		c = __builtin_ia32_crc32di(c, v);
	}
	for (; len; len--, p++)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p);
	return ~(uint32_t)c;
}
