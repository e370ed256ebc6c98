/* Human-readable sizes. Every unit is a power of 1024; decimals are accepted only when exact. */
#include "common/size.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Unit letters in order of increasing power: index i means 1024^i. */
static const char st_size_units[] = "BKMGTP";

/* Returns the shift (0, 10, ..., 50) for a unit letter, or -1. */
static int unit_shift(char c)
{
	const char *p;

	if (c >= 'a' && c <= 'z') {
		c = (char)(c - 'a' + 'A');
	}
	p = strchr(st_size_units + 1, c);
	if (c == '\0' || p == NULL) {
		return -1;
	}
	return (int)(p - st_size_units) * 10;
}

static int lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/*
 * Grammar: DIGITS [ "." DIGITS ] [ UNIT [ "i" ] [ "B" ] | "B" ], case-insensitive, no spaces.
 * The value is computed exactly in 128-bit arithmetic, so "1.5G" is accepted and "1.3K"
 * (1331.2 bytes) is not. Returns 0, -EINVAL or -ERANGE.
 */
int st_parse_size(const char *s, uint64_t *out)
{
	unsigned __int128 whole = 0, frac = 0, scale = 1, v;
	const char *p = s;
	int shift = 0, ndigits = 0;

	if (*p < '0' || *p > '9') {
		return -EINVAL; /* empty, negative, "+1", " 1", ".5" */
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (unsigned)(*p - '0');
		if (whole > UINT64_MAX) {
			return -ERANGE;
		}
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9') {
			return -EINVAL; /* "1." or "1.K" */
		}
		for (; *p >= '0' && *p <= '9'; p++) {
			/* Past 19 digits only trailing zeros can still give a whole number of bytes
			 * (1024^5 < 10^16), so drop them instead of growing scale without bound. */
			if (ndigits >= 19) {
				if (*p != '0') {
					return -EINVAL;
				}
				continue;
			}
			frac = frac * 10 + (unsigned)(*p - '0');
			scale *= 10;
			ndigits++;
		}
	}
	if (*p != '\0' && lower(*p) != 'b') {
		shift = unit_shift(*p);
		if (shift < 0) {
			return -EINVAL;
		}
		p++;
		if (lower(*p) == 'i') {
			p++;
			if (lower(*p) != 'b') {
				return -EINVAL; /* "1Ki" */
			}
		}
	}
	if (lower(*p) == 'b') {
		p++;
	}
	if (*p != '\0') {
		return -EINVAL; /* "1.5.5", "10GG", "10 G" */
	}

	/* whole < 2^64 and shift <= 50, so whole << shift < 2^114: no 128-bit overflow. */
	v = whole << shift;
	if (frac != 0) {
		unsigned __int128 f = frac << shift; /* frac < 10^19 < 2^64, same bound */
		if (f % scale != 0) {
			return -EINVAL; /* not a whole number of bytes */
		}
		v += f / scale;
	}
	if (v > UINT64_MAX) {
		return -ERANGE;
	}
	*out = (uint64_t)v;
	return 0;
}

/*
 * Pick the largest unit not above v. Exact multiples print as integers ("10G"); anything else
 * prints with one decimal, rounded half up ("1.5K", or "1.0K" for 1025, which is approximate).
 */
char *st_format_size(uint64_t v, char *buf, size_t len)
{
	unsigned __int128 unit, tenths;
	int i = 0;

	while (i + 1 < (int)sizeof(st_size_units) - 1 && v >= (uint64_t)1 << ((i + 1) * 10)) {
		i++;
	}
	if (i == 0) {
		snprintf(buf, len, "%" PRIu64, v);
		return buf;
	}
	unit = (unsigned __int128)1 << (i * 10);
	if (v % unit == 0) {
		snprintf(buf, len, "%" PRIu64 "%c", (uint64_t)(v / unit), st_size_units[i]);
		return buf;
	}
	tenths = ((unsigned __int128)v * 10 + unit / 2) / unit;
	/* 1023.95K rounds to 1024.0K: say 1.0M instead, unless there is no bigger unit. */
	if (tenths >= 10240 && i + 1 < (int)sizeof(st_size_units) - 1) {
		i++;
		tenths = 10;
	}
	snprintf(buf, len, "%" PRIu64 ".%u%c", (uint64_t)(tenths / 10), (unsigned)(tenths % 10),
		 st_size_units[i]);
	return buf;
}
