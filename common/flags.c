/*
 * Declarative flags. The parser makes one pass over argv; positionals are copied down to
 * argv[0..npos) as they are met, which is safe in place because the write index always trails
 * the read index (it starts at 0, the read index at 1).
 */
#include "common/flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"

static const struct st_flag *flag_find(const struct st_flag *flags, const char *name, size_t len)
{
	for (const struct st_flag *f = flags; f->name != NULL; f++) {
		if (strlen(f->name) == len && memcmp(f->name, name, len) == 0) {
			return f;
		}
	}
	return NULL;
}

/* Store value into f->dest. Returns 0, or -EINVAL after printing why. */
static int flag_set(const struct st_flag *f, const char *value)
{
	char *end;
	long long ll;

	switch (f->type) {
	case ST_FLAG_BOOL:
		*(bool *)f->dest = true;
		return 0;
	case ST_FLAG_STRING:
		*(const char **)f->dest = value;
		return 0;
	case ST_FLAG_INT:
		errno = 0;
		ll = strtoll(value, &end, 10);
		if (value[0] == '\0' || *end != '\0' || errno != 0) {
			fprintf(stderr, "error: --%s: '%s' is not a valid integer\n", f->name,
				value);
			return -EINVAL;
		}
		*(int64_t *)f->dest = ll;
		return 0;
	case ST_FLAG_SIZE:
		if (st_parse_size(value, (uint64_t *)f->dest) < 0) {
			fprintf(stderr,
				"error: --%s: '%s' is not a valid size (e.g. 4096, 4M, 10G)\n",
				f->name, value);
			return -EINVAL;
		}
		return 0;
	}
	fprintf(stderr, "error: --%s: bad flag table entry\n", f->name);
	return -EINVAL;
}

/*
 * Returns 0, 1 after --help, or -EINVAL after printing one line. "--" ends flag parsing; a
 * lone "-" and negative numbers ("-5") are positionals; any other "-x" is an unknown flag.
 */
int st_flags_parse(const char *usage, const struct st_flag *flags, int argc, char **argv, int *npos)
{
	int i, n = 0;

	*npos = 0;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *value;
		const struct st_flag *f;
		size_t len;
		int rc;

		if (strcmp(a, "--") == 0) {
			for (i++; i < argc; i++) {
				argv[n++] = argv[i];
			}
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			st_flags_usage(usage, flags);
			return 1;
		}
		if (a[0] != '-' || a[1] == '\0' || (a[1] >= '0' && a[1] <= '9')) {
			argv[n++] = argv[i];
			continue;
		}
		if (a[1] != '-') {
			fprintf(stderr, "error: unknown flag '%s' (see --help)\n", a);
			return -EINVAL;
		}

		name = a + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		f = flag_find(flags, name, len);
		if (f == NULL) {
			fprintf(stderr, "error: unknown flag '--%.*s' (see --help)\n", (int)len,
				name);
			return -EINVAL;
		}
		if (f->type == ST_FLAG_BOOL) {
			if (eq != NULL) {
				fprintf(stderr, "error: --%s takes no value\n", f->name);
				return -EINVAL;
			}
			value = NULL;
		} else if (eq != NULL) {
			value = eq + 1;
		} else if (i + 1 < argc) {
			value = argv[++i]; /* taken verbatim, so "--offset -5" works */
		} else {
			fprintf(stderr, "error: --%s needs a value (%s)\n", f->name,
				f->metavar ? f->metavar : "VALUE");
			return -EINVAL;
		}
		rc = flag_set(f, value);
		if (rc < 0) {
			return rc;
		}
	}
	if (n < argc) {
		argv[n] = NULL;
	}
	*npos = n;
	return 0;
}

void st_flags_usage(const char *usage, const struct st_flag *flags)
{
	size_t width = strlen("-h, --help");
	char col[128];

	for (const struct st_flag *f = flags; f->name != NULL; f++) {
		size_t w = strlen("--") + strlen(f->name);
		if (f->type != ST_FLAG_BOOL) {
			w += 1 + strlen(f->metavar ? f->metavar : "VALUE");
		}
		if (w > width) {
			width = w;
		}
	}
	if (width > sizeof(col) - 1) {
		width = sizeof(col) - 1;
	}

	printf("usage: %s\n\nflags:\n", usage);
	for (const struct st_flag *f = flags; f->name != NULL; f++) {
		if (f->type == ST_FLAG_BOOL) {
			snprintf(col, sizeof(col), "--%s", f->name);
		} else {
			snprintf(col, sizeof(col), "--%s %s", f->name,
				 f->metavar ? f->metavar : "VALUE");
		}
		printf("  %-*s  %s\n", (int)width, col, f->help ? f->help : "");
	}
	printf("  %-*s  %s\n", (int)width, "-h, --help", "show this help and exit");
	fflush(stdout);
}

unsigned st_env_uint(const char *name, unsigned def, unsigned cap)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (v == NULL || *v == '\0') {
		return def;
	}
	n = strtoul(v, &end, 10);
	if (*end != '\0') {
		return def;
	}
	return n > cap ? cap : (unsigned)n;
}
