/* SPDX-License-Identifier: MIT */
/*
 * crc32c.c - CRC-32C (Castagnoli) of replication frames and journal
 * records, by Intel's ISA-L (Debian libisal), which picks the fastest
 * code the processor runs (folding with carry-less multiplication, or the
 * SSE 4.2 instruction): tens of GB/s, so that checking a frame or a
 * record costs a fraction of copying it.  ISA-L's crc32_iscsi() takes
 * and returns the register without the final inversions of the standard
 * CRC-32C.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <isa-l/crc.h>

#include "contract.h"

uint32_t sb_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	/* crc32_iscsi() takes an int length. */
	while (len > 0) {
		int n = len > (1u << 30) ? 1 << 30 : (int)len;

		crc = ~crc32_iscsi((unsigned char *)p, n, ~crc);
		p += n;
		len -= (size_t)n;
	}
	return crc;
}
