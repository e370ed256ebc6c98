/* Human-readable sizes: "10G", "4M", "512K", "1T", "4096", with optional "iB"/"B" suffix. Powers of
 * 1024. */
#ifndef STRATA_COMMON_SIZE_H
#define STRATA_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parse s into *out. Returns 0, or -EINVAL on garbage/empty/negative, -ERANGE on overflow. */
int st_parse_size(const char *s, uint64_t *out) __attribute__((nonnull));

/* Format as the shortest exact-ish form: 10737418240 -> "10G", 1536 -> "1.5K". Returns buf. */
char *st_format_size(uint64_t v, char *buf, size_t len) __attribute__((nonnull));

#endif
