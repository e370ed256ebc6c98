/* CRC-32C (Castagnoli). SSE4.2 when the CPU has it, a table-driven fallback otherwise. */
#ifndef STRATA_COMMON_CRC32C_H
#define STRATA_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc over buf. Start with crc = 0. st_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable implementation, exported so tests can check it against the hardware one. */
uint32_t st_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* True when st_crc32c uses the SSE4.2 instruction. */
int st_crc32c_hw_available(void);

#endif
