/*
 * Logging: one line per call, "2026-11-21T21:30:00.123Z meta INFO: message\n".
 *
 * Thread safety comes from formatting the whole line into a stack buffer and handing it to a
 * single write(2): stderr is unbuffered and stdio's FILE lock would not keep two threads'
 * lines from interleaving across partial writes, but one write of at most PIPE_BUF bytes to a
 * pipe is atomic, and to a file or terminal is in practice not split.
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static char log_component[32] = "strata";
static _Atomic int log_threshold = ST_LOG_INFO;

static const char *const log_level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void st_log_init(const char *component, enum st_log_level level)
{
	snprintf(log_component, sizeof(log_component), "%s", component);
	log_threshold = level;
}

/* Returns the level, or -EINVAL. Case-insensitive; "warning" is accepted as "warn". */
int st_log_parse_level(const char *s)
{
	if (strcasecmp(s, "debug") == 0) {
		return ST_LOG_DEBUG;
	}
	if (strcasecmp(s, "info") == 0) {
		return ST_LOG_INFO;
	}
	if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0) {
		return ST_LOG_WARN;
	}
	if (strcasecmp(s, "error") == 0) {
		return ST_LOG_ERROR;
	}
	return -EINVAL;
}

void st_log(enum st_log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t n, room;
	const char *p;
	int saved_errno = errno; /* callers log strerror(errno) and then test errno again */
	int r;
	va_list ap;

	if ((int)level < log_threshold) {
		return;
	}
	if ((int)level < ST_LOG_DEBUG || (int)level > ST_LOG_ERROR) {
		level = ST_LOG_ERROR;
	}

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s: ", ts.tv_nsec / 1000000,
		     log_component, log_level_names[level]);
	n += (r > 0) ? (size_t)r : 0;

	/* Leave one byte for the newline; vsnprintf truncates a long message to fit. */
	room = sizeof(line) - 1 - n;
	va_start(ap, fmt);
	r = vsnprintf(line + n, room + 1, fmt, ap);
	va_end(ap);
	if (r > 0) {
		n += ((size_t)r < room) ? (size_t)r : room;
	}
	if (n > 0 && line[n - 1] == '\n') {
		n--; /* tolerate messages that bring their own newline */
	}
	line[n++] = '\n';

	for (p = line; n > 0;) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0) {
			if (errno == EINTR) {
				continue;
			}
			break; /* nowhere left to report it */
		}
		p += w;
		n -= (size_t)w;
	}
	errno = saved_errno;
}
