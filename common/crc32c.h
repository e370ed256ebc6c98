/* CRC-32C (Castagnoli): Intel ISA-L's folding code, and a table-driven reference. */
#ifndef STRATA_COMMON_CRC32C_H
#define STRATA_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc over buf. Start with crc = 0. st_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable implementation, exported so tests can check ISA-L against it. */
uint32_t st_crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
