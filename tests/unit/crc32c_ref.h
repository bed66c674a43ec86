/* crc32c_ref.h - a bit-at-a-time CRC32C (Castagnoli, reflected 0x82f63b78),
 * independent of proxy.c's table: the reference the PROXY v2 unit tests and
 * the proxy fuzz target check proxy.c's CRC32C TLV against. */
#ifndef POOLD_TESTS_CRC32C_REF_H
#define POOLD_TESTS_CRC32C_REF_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t crc32c_ref(const uint8_t *p, size_t n)
{
	uint32_t crc = UINT32_MAX;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78 : crc >> 1;
	}
	return ~crc;
}

#endif
