/* `strata-bench run TARGET [flags]`: one workload against one target, and the flag table that
 * every I/O scenario shares. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/flags.h"
#include "internal.h"

int bench_usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "error: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nusage: %s\n", usage);
	va_end(ap);
	return 2;
}

int bench_cli_flags(struct bench_cli *c, struct st_flag *f)
{
	memset(c, 0, sizeof(*c));
	bench_opts_default(&c->o);
	c->rw = "randread";
	c->bs = 4096;
	c->qd = 1;
	c->jobs = 1;
	c->rwmix = 50;
	c->seed = -1;
	c->meta = getenv("STRATA_META");
	const struct st_flag t[] = {
		{"rw", ST_FLAG_STRING, &c->rw, "MODE",
		 "read, write, randread (default), randwrite or randrw"},
		{"rwmix", ST_FLAG_INT, &c->rwmix, "PCT",
		 "randrw: percentage of reads (default 50)"},
		{"bs", ST_FLAG_SIZE, &c->bs, "SIZE", "bytes per I/O (default 4k)"},
		{"qd", ST_FLAG_INT, &c->qd, "N", "I/Os in flight per job (default 1)"},
		{"jobs", ST_FLAG_INT, &c->jobs, "N",
		 "threads, each with its own connection and slice of the region (default 1)"},
		{"time", ST_FLAG_STRING, &c->time, "SECS",
		 "run this long: 10, 10s, 2m (default 10 s unless --size)"},
		{"size", ST_FLAG_SIZE, &c->size, "SIZE",
		 "stop after this many bytes over all jobs (with --time: whichever first)"},
		{"offset", ST_FLAG_SIZE, &c->offset, "SIZE", "start of the region (default 0)"},
		{"span", ST_FLAG_SIZE, &c->span, "SIZE",
		 "length of the region (default: to the end of the target)"},
		{"verify", ST_FLAG_BOOL, &c->verify, NULL,
		 "write a header and pattern per 4k, check every read, read all back at the end; "
		 "exit 1 on any mismatch"},
		{"seed", ST_FLAG_INT, &c->seed, "N", "random seed (default: from the clock)"},
		{"json", ST_FLAG_BOOL, &c->json, NULL, "print the result as JSON"},
		{"plot", ST_FLAG_STRING, &c->plot, "FILE.svg",
		 "draw IOPS and latency over time with gnuplot"},
		{"quiet", ST_FLAG_BOOL, &c->quiet, NULL, "no live progress line"},
		{"meta", ST_FLAG_STRING, &c->meta, "HOST:PORT",
		 "strata-meta for strata:// (else $STRATA_META, else 127.0.0.1:7700)"},
	};
	_Static_assert(sizeof(t) / sizeof(t[0]) == BENCH_CLI_NFLAGS, "BENCH_CLI_NFLAGS");
	int n = (int)(sizeof(t) / sizeof(t[0]));
	memcpy(f, t, sizeof(t));
	return n;
}

static int parse_time(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || v < 0) {
		return -EINVAL;
	}
	if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0) {
		v *= 60;
	} else if (strcmp(end, "ms") == 0) {
		v /= 1000;
	} else if (*end != '\0' && strcmp(end, "s") != 0) {
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int bench_cli_finish(struct bench_cli *c, const char *usage)
{
	struct bench_opts *o = &c->o;
	if (bench_rw_parse(c->rw, &o->rw) < 0) {
		return bench_usage_error(
			usage, "--rw '%s': want read, write, randread, randwrite or randrw", c->rw);
	}
	if (c->rwmix < 0 || c->rwmix > 100) {
		return bench_usage_error(usage, "--rwmix must be 0 to 100");
	}
	if (c->bs == 0 || c->bs > (64u << 20)) {
		return bench_usage_error(usage, "--bs must be 1 byte to 64M");
	}
	if (c->qd < 1 || c->qd > 1024) {
		return bench_usage_error(usage, "--qd must be 1 to 1024");
	}
	if (c->jobs < 1 || c->jobs > 256) {
		return bench_usage_error(usage, "--jobs must be 1 to 256");
	}
	o->time_s = c->size ? 0 : 10;
	if (c->time != NULL && (parse_time(c->time, &o->time_s) < 0 || o->time_s <= 0)) {
		return bench_usage_error(usage, "--time '%s': want seconds, e.g. 10 or 10s or 2m",
					 c->time);
	}
	if (c->size != 0 && c->size < c->bs) {
		return bench_usage_error(usage, "--size must be at least --bs");
	}
	if (c->plot != NULL && c->plot[0] == '\0') {
		return bench_usage_error(usage, "--plot needs a file name");
	}
	o->rwmix = (int)c->rwmix;
	o->bs = c->bs;
	o->qd = (int)c->qd;
	o->jobs = (int)c->jobs;
	o->size = c->size;
	o->offset = c->offset;
	o->span = c->span;
	o->verify = c->verify;
	o->progress = !c->quiet && !c->json;
	o->meta = c->meta;
	if (c->seed >= 0) {
		o->seed = (uint64_t)c->seed;
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		o->seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
			  ((uint64_t)getpid() << 40);
	}
	return 0;
}

#define RUN_USAGE                                                                                  \
	"strata-bench run TARGET [--rw MODE] [--bs SIZE] [--qd N] [--jobs N] [--time SECS | "      \
	"--size SIZE] [--offset SIZE] [--span SIZE] [--verify] [--json] [--plot FILE.svg]\n"       \
	"  TARGET: strata://[META/]pool/vol, nbd://host:port/export, iscsi://host:port/iqn/lun"

int bench_run_main(int argc, char **argv)
{
	struct bench_cli c;
	struct st_flag flags[BENCH_CLI_NFLAGS + 1] = {{0}};
	bench_cli_flags(&c, flags);
	int npos = 0;
	int rc = st_flags_parse(RUN_USAGE, flags, argc, argv, &npos);
	if (rc != 0) {
		if (rc > 0) {
			return 0;
		}
		fprintf(stderr, "usage: %s\n", RUN_USAGE);
		return 2;
	}
	if (npos != 1) {
		return bench_usage_error(RUN_USAGE, npos == 0 ? "no target given"
							      : "more than one target given");
	}
	rc = bench_cli_finish(&c, RUN_USAGE);
	if (rc != 0) {
		return rc;
	}
	const char *target = argv[0];
	if (strstr(target, "://") == NULL) {
		return bench_usage_error(RUN_USAGE, "'%s' is not a target URI", target);
	}
	struct bench_result r;
	rc = bench_run(&c.o, &target, 1, &r);
	if (rc < 0) {
		bench_result_free(&r);
		return 1;
	}
	if (c.json) {
		bench_report_json(stdout, &c.o, target, &r);
		putchar('\n');
	} else {
		bench_report_text(stdout, &c.o, target, &r);
	}
	int status = (r.errors || r.mismatches) ? 1 : 0;
	if (c.plot != NULL) {
		char title[512];
		snprintf(title, sizeof(title), "%s %s bs=%llu qd=%d jobs=%d", target,
			 bench_rw_name(c.o.rw), (unsigned long long)c.o.bs, c.o.qd, c.o.jobs);
		if (bench_plot(c.plot, title, &r) < 0) {
			status = 1;
		}
	}
	if (r.mismatches) {
		fprintf(stderr, "strata-bench: verify FAILED: %llu sectors mismatched\n",
			(unsigned long long)r.mismatches);
	}
	if (r.errors) {
		fprintf(stderr, "strata-bench: %llu I/O errors\n", (unsigned long long)r.errors);
	}
	bench_result_free(&r);
	return status;
}
