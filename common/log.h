/* Logging with levels and a component tag: "2026-11-21T21:30:00.123Z meta INFO: message". */
#ifndef STRATA_COMMON_LOG_H
#define STRATA_COMMON_LOG_H

enum st_log_level {
	ST_LOG_DEBUG = 0,
	ST_LOG_INFO = 1,
	ST_LOG_WARN = 2,
	ST_LOG_ERROR = 3,
};

/* Set the component tag ("meta", "blockd", ...) and the minimum level. Call once at start-up. */
void st_log_init(const char *component, enum st_log_level level) __attribute__((nonnull));

/* Parse "debug", "info", "warn" or "error". Returns the level, or -EINVAL. */
int st_log_parse_level(const char *s) __attribute__((nonnull));

/* Write one line to stderr if level is at or above the threshold. Thread-safe. */
void st_log(enum st_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define st_debug(...) st_log(ST_LOG_DEBUG, __VA_ARGS__)
#define st_info(...)  st_log(ST_LOG_INFO, __VA_ARGS__)
#define st_warn(...)  st_log(ST_LOG_WARN, __VA_ARGS__)
#define st_error(...) st_log(ST_LOG_ERROR, __VA_ARGS__)

#endif
