#include <criterion/criterion.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

/* stderr goes to a temporary file while fn runs; returns the text written (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
	FILE *tmp = tmpfile();
	int saved;
	long size;
	char *out;

	cr_assert_not_null(tmp);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	cr_assert_geq(saved, 0);
	cr_assert_geq(dup2(fileno(tmp), STDERR_FILENO), 0);
	fn();
	cr_assert_geq(dup2(saved, STDERR_FILENO), 0);
	close(saved);

	fseek(tmp, 0, SEEK_END);
	size = ftell(tmp);
	rewind(tmp);
	out = calloc(1, (size_t)size + 1);
	cr_assert_not_null(out);
	cr_assert_eq(fread(out, 1, (size_t)size, tmp), (size_t)size);
	fclose(tmp);
	return out;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++) {
		n += *s == '\n';
	}
	return n;
}

Test(log, parse_level)
{
	cr_expect_eq(st_log_parse_level("debug"), ST_LOG_DEBUG);
	cr_expect_eq(st_log_parse_level("info"), ST_LOG_INFO);
	cr_expect_eq(st_log_parse_level("warn"), ST_LOG_WARN);
	cr_expect_eq(st_log_parse_level("error"), ST_LOG_ERROR);
	cr_expect_eq(st_log_parse_level("WARN"), ST_LOG_WARN);
	cr_expect_eq(st_log_parse_level("warning"), ST_LOG_WARN);
	cr_expect_eq(st_log_parse_level(""), -EINVAL);
	cr_expect_eq(st_log_parse_level("verbose"), -EINVAL);
	cr_expect_eq(st_log_parse_level("info "), -EINVAL);
}

static void log_all(void)
{
	st_debug("d %d", 1);
	st_info("i %d", 2);
	st_warn("w %s", "three");
	st_error("e %d", 4);
}

Test(log, filter_warn)
{
	st_log_init("meta", ST_LOG_WARN);
	char *out = capture_stderr(log_all);

	cr_assert_eq(count_lines(out), 2, "%s", out);
	cr_assert_null(strstr(out, " d 1"));
	cr_assert_null(strstr(out, " i 2"));
	cr_assert_not_null(strstr(out, "meta WARN: w three\n"));
	cr_assert_not_null(strstr(out, "meta ERROR: e 4\n"));
	free(out);
}

Test(log, filter_debug_shows_all)
{
	st_log_init("blockd", ST_LOG_DEBUG);
	char *out = capture_stderr(log_all);

	cr_assert_eq(count_lines(out), 4, "%s", out);
	cr_assert_not_null(strstr(out, "blockd DEBUG: d 1\n"));
	cr_assert_not_null(strstr(out, "blockd INFO: i 2\n"));
	free(out);
}

Test(log, filter_error)
{
	st_log_init("x", ST_LOG_ERROR);
	char *out = capture_stderr(log_all);

	cr_assert_eq(count_lines(out), 1, "%s", out);
	free(out);
}

static void log_one(void)
{
	st_info("hello %s", "world");
}

Test(log, line_format)
{
	regex_t re;

	st_log_init("meta", ST_LOG_INFO);
	char *out = capture_stderr(log_one);
	cr_assert_eq(regcomp(&re,
			     "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
			     "meta INFO: hello world\n$",
			     REG_EXTENDED),
		     0);
	cr_assert_eq(regexec(&re, out, 0, NULL, 0), 0, "got: %s", out);
	regfree(&re);
	free(out);
}

static void log_newline_and_errno(void)
{
	errno = EBADF;
	st_warn("ends with newline\n");
	cr_assert_eq(errno, EBADF, "st_log must preserve errno");
}

Test(log, own_newline_not_doubled)
{
	st_log_init("meta", ST_LOG_INFO);
	char *out = capture_stderr(log_newline_and_errno);

	cr_assert_eq(count_lines(out), 1, "%s", out);
	free(out);
}

static void log_long(void)
{
	static char big[10000];

	memset(big, 'a', sizeof(big) - 1);
	st_error("%s", big);
}

Test(log, long_message_truncated_to_one_line)
{
	st_log_init("meta", ST_LOG_INFO);
	char *out = capture_stderr(log_long);

	cr_assert_eq(count_lines(out), 1);
	cr_assert_leq(strlen(out), 4096);
	cr_assert_eq(out[strlen(out) - 1], '\n');
	free(out);
}
