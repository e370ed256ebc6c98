/* A tiny streaming JSON emitter: enough for the CLI's listings, with correct string escaping. */
#include <inttypes.h>

#include "internal.h"

void cli_json_init(struct cli_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->need_comma[0] = false;
}

void cli_json_escape(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20) {
				fprintf(f, "\\u%04x", *p);
			} else {
				fputc(*p, f);
			}
		}
	}
	fputc('"', f);
}

static void prefix(struct cli_json *j, const char *key)
{
	if (j->need_comma[j->depth]) {
		fputc(',', j->f);
	}
	j->need_comma[j->depth] = true;
	if (key != NULL) {
		cli_json_escape(j->f, key);
		fputc(':', j->f);
	}
}

static void open_(struct cli_json *j, const char *key, char c)
{
	prefix(j, key);
	fputc(c, j->f);
	if (j->depth < 63) {
		j->depth++;
	}
	j->need_comma[j->depth] = false;
}

static void close_(struct cli_json *j, char c)
{
	fputc(c, j->f);
	if (j->depth > 0) {
		j->depth--;
	}
	if (j->depth == 0) {
		fputc('\n', j->f);
	}
}

void cli_json_obj_begin(struct cli_json *j, const char *key)
{
	open_(j, key, '{');
}

void cli_json_obj_end(struct cli_json *j)
{
	close_(j, '}');
}

void cli_json_arr_begin(struct cli_json *j, const char *key)
{
	open_(j, key, '[');
}

void cli_json_arr_end(struct cli_json *j)
{
	close_(j, ']');
}

void cli_json_str(struct cli_json *j, const char *key, const char *v)
{
	prefix(j, key);
	cli_json_escape(j->f, v ? v : "");
}

void cli_json_u64(struct cli_json *j, const char *key, uint64_t v)
{
	prefix(j, key);
	fprintf(j->f, "%" PRIu64, v);
}

void cli_json_bool(struct cli_json *j, const char *key, bool v)
{
	prefix(j, key);
	fputs(v ? "true" : "false", j->f);
}
