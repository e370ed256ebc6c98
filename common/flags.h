/*
 * Declarative command-line flags. Every binary describes its flags in a table; --help prints
 * them. "--name value" and "--name=value" are both accepted. Positional arguments may appear
 * anywhere and are compacted, in order, to the front of argv.
 */
#ifndef STRATA_COMMON_FLAGS_H
#define STRATA_COMMON_FLAGS_H

#include <stdbool.h>
#include <stdint.h>

enum st_flag_type {
	ST_FLAG_BOOL,   /* bool *: present means true, takes no value */
	ST_FLAG_STRING, /* const char **: points into argv */
	ST_FLAG_INT,    /* int64_t *: decimal, may be negative */
	ST_FLAG_SIZE,   /* uint64_t *: "10G", "4M", "512" (see size.h) */
};

struct st_flag {
	const char *name; /* without the leading "--" */
	enum st_flag_type type;
	void *dest;
	const char *metavar; /* shown in --help, e.g. "HOST:PORT"; NULL for bools */
	const char *help;
};

/*
 * Parse argv[1..argc) against a table terminated by an entry with name == NULL.
 * On "--help" or "-h" prints usage (usage line, then the flag table) to stdout and returns 1.
 * On success returns 0 and stores the positional arguments in argv[0..*npos).
 * On an unknown flag, a missing value or a bad number, prints one line to stderr and returns
 * -EINVAL.
 */
int st_flags_parse(const char *usage, const struct st_flag *flags, int argc, char **argv, int *npos)
	__attribute__((nonnull(1, 2, 4, 5)));

/* Print usage and the flag table to stdout. */
void st_flags_usage(const char *usage, const struct st_flag *flags) __attribute__((nonnull));

/* An unsigned from the environment variable name, capped at cap; def when it is unset, empty
 * or not a decimal number. The tuning knobs (STRATA_SPIN_US, STRATA_SLICE_US, ...) use it. */
unsigned st_env_uint(const char *name, unsigned def, unsigned cap) __attribute__((nonnull));

#endif
