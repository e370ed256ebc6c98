/*
 * Scenarios that build their own volumes through strata-meta and then drive the workload
 * engine through libstrata (default) or a gateway (--via nbd://HOST:PORT):
 *
 *   clone-depth      d0 <- d0@s <- d1 <- d1@s <- d2 ... : the same workload at each depth, to
 *                    show that reads stay one hop whatever the chain (IOPS and p99 per depth)
 *   boot-storm       golden template, N clones, all read the boot set at once (the PVS case)
 *   snap-under-load  a writer at full speed while a snapshot is taken every --interval
 *
 * Each makes a fresh pool (or uses --pool) so runs never collide; --keep leaves the volumes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/flags.h"
#include "internal.h"

#define SCEN_NFLAGS 4
#define MAX_EXTRA   4

struct scen {
	struct bench_cli c;
	const char *pool, *via;
	int64_t replicas;
	bool keep;
	char pool_buf[64];
	int fd;
};

/* Set the shared defaults; the caller may then change c.* defaults before scen_parse. */
static void scen_init(struct scen *s, struct st_flag *flags)
{
	memset(s, 0, sizeof(*s));
	int n = bench_cli_flags(&s->c, flags);
	s->replicas = 1;
	s->fd = -1;
	const struct st_flag t[SCEN_NFLAGS] = {
		{"pool", ST_FLAG_STRING, &s->pool, "NAME",
		 "use this existing pool (default: create bench-PID-TIME)"},
		{"replicas", ST_FLAG_INT, &s->replicas, "N",
		 "replicas of the new pool (default 1)"},
		{"via", ST_FLAG_STRING, &s->via, "URI",
		 "drive I/O through libstrata (default) or a gateway: nbd://HOST:PORT"},
		{"keep", ST_FLAG_BOOL, &s->keep, NULL, "leave the volumes in place"},
	};
	memcpy(flags + n, t, sizeof(t));
}

/* Parse and validate the shared flags. Returns -1 to go on, else an exit code. */
static int scen_parse(struct scen *s, const char *usage, struct st_flag *flags, int argc,
		      char **argv)
{
	int npos = 0;
	int rc = st_flags_parse(usage, flags, argc, argv, &npos);
	if (rc != 0) {
		if (rc > 0) {
			return 0;
		}
		fprintf(stderr, "usage: %s\n", usage);
		return 2;
	}
	if (npos != 0) {
		return bench_usage_error(usage, "unexpected argument '%s'", argv[0]);
	}
	rc = bench_cli_finish(&s->c, usage);
	if (rc != 0) {
		return rc;
	}
	if (s->via != NULL && strcmp(s->via, "strata") != 0 && strncmp(s->via, "nbd://", 6) != 0) {
		return bench_usage_error(usage, "--via '%s': want strata or nbd://HOST:PORT",
					 s->via);
	}
	if (s->replicas < 1 || s->replicas > 3) {
		return bench_usage_error(usage, "--replicas must be 1 to 3");
	}
	if (s->c.meta == NULL || s->c.meta[0] == '\0') {
		s->c.meta = "127.0.0.1:7700";
		s->c.o.meta = s->c.meta;
	}
	return -1;
}

/* Connect to meta and make the pool (after every argument is validated). Returns -1 to go on,
 * else an exit code. */
static int scen_connect(struct scen *s)
{
	s->fd = bench_meta_connect(s->c.meta);
	if (s->fd < 0) {
		return 1;
	}
	if (s->pool == NULL) {
		snprintf(s->pool_buf, sizeof(s->pool_buf), "bench-%d-%ld", (int)getpid(),
			 (long)time(NULL));
		s->pool = s->pool_buf;
		if (bench_meta_pool_create(s->fd, s->pool, (int)s->replicas) < 0) {
			return 1;
		}
	}
	return -1;
}

/* The target URI of volume name in the scenario's pool. */
static void scen_uri(const struct scen *s, const char *name, char *buf, size_t len)
{
	if (s->via == NULL || strcmp(s->via, "strata") == 0) {
		snprintf(buf, len, "strata://%s/%s/%s", s->c.meta, s->pool, name);
	} else {
		size_t n = strlen(s->via);
		snprintf(buf, len, "%.*s/%s/%s", (int)(n && s->via[n - 1] == '/' ? n - 1 : n),
			 s->via, s->pool, name);
	}
}

/* Write [0, size) of volume name sequentially in 1 MiB blocks (data to read back later). */
static int scen_fill(const struct scen *s, const char *name, uint64_t size)
{
	char uri[512];
	scen_uri(s, name, uri, sizeof(uri));
	struct bench_opts o;
	bench_opts_default(&o);
	o.rw = BENCH_WRITE;
	o.bs = 1 << 20;
	if (size < o.bs) {
		o.bs = size;
	}
	o.qd = 8;
	o.time_s = 0;
	o.size = size;
	o.span = size;
	o.progress = false;
	o.meta = s->c.meta;
	o.seed = s->c.o.seed;
	struct bench_result r;
	const char *u = uri;
	int rc = bench_run(&o, &u, 1, &r);
	if (rc == 0 && r.errors != 0) {
		fprintf(stderr, "strata-bench: filling %s: %" PRIu64 " write errors\n", name,
			r.errors);
		rc = -EIO;
	}
	bench_result_free(&r);
	return rc;
}

static void print_lat_row(const char *label, const struct bench_result *r, int d, double base)
{
	const struct bench_hist *h = &r->hist[d];
	double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
	double iops = (double)r->ios[d] / el;
	printf("%-8s %10.0f %9.1f %9.1f %9.1f %9.1f %10.1f %7.2f %7" PRIu64 "\n", label, iops,
	       (double)r->bytes[d] / 1e6 / el, (double)bench_hist_quantile(h, 0.5) / 1e3,
	       (double)bench_hist_quantile(h, 0.99) / 1e3,
	       (double)bench_hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3,
	       base > 0 ? iops / base : 1.0, r->errors + r->mismatches);
}

/* ---- clone-depth ---- */

#define CD_USAGE                                                                                   \
	"strata-bench clone-depth [--depths 0,1,2,4,8,16,32,64] [--fill SIZE] [--vol-size SIZE] "  \
	"[--via nbd://HOST:PORT] [workload flags: --rw --bs --qd --jobs --time ...] [--json]"

static int parse_depths(const char *s, int *out, int max)
{
	int n = 0;
	const char *p = s;
	while (*p) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v < 0 || v > 64 || n == max || (n > 0 && v <= out[n - 1])) {
			return -EINVAL;
		}
		out[n++] = (int)v;
		p = end;
		if (*p == ',') {
			p++;
		} else if (*p != '\0') {
			return -EINVAL;
		}
	}
	return n;
}

int bench_clone_depth(int argc, char **argv)
{
	struct scen s;
	struct st_flag flags[BENCH_CLI_NFLAGS + SCEN_NFLAGS + MAX_EXTRA + 1];
	memset(flags, 0, sizeof(flags));
	scen_init(&s, flags);
	const char *depths_s = "0,1,2,4,8,16,32,64";
	uint64_t fill = 64ull << 20, vol_size = 1ull << 30;
	const struct st_flag extra[] = {
		{"depths", ST_FLAG_STRING, &depths_s, "LIST",
		 "increasing clone depths to measure, 0 to 64 (default 0,1,2,4,8,16,32,64)"},
		{"fill", ST_FLAG_SIZE, &fill, "SIZE",
		 "data written at depth 0 and read at every depth; the default --span (64M)"},
		{"vol-size", ST_FLAG_SIZE, &vol_size, "SIZE", "volume size (default 1G)"},
	};
	memcpy(flags + BENCH_CLI_NFLAGS + SCEN_NFLAGS, extra, sizeof(extra));
	s.c.qd = 16;
	s.c.time = "5";
	int rc = scen_parse(&s, CD_USAGE, flags, argc, argv);
	if (rc >= 0) {
		goto out;
	}
	int depths[65];
	int nd = parse_depths(depths_s, depths, 65);
	if (nd <= 0) {
		rc = bench_usage_error(CD_USAGE, "--depths '%s': want increasing numbers 0..64",
				       depths_s);
		goto out;
	}
	if (fill == 0 || fill > vol_size || fill % 4096 != 0) {
		rc = bench_usage_error(CD_USAGE, "--fill must be a multiple of 4k, at most "
						 "--vol-size");
		goto out;
	}
	if (s.c.o.span == 0) {
		s.c.o.span = fill;
	}
	if ((rc = scen_connect(&s)) >= 0) {
		goto out;
	}
	rc = 1;
	if (bench_meta_volume_create(s.fd, s.pool, "d0", vol_size) < 0 ||
	    scen_fill(&s, "d0", fill) < 0) {
		goto out;
	}
	if (s.c.json) {
		printf("{\"scenario\":\"clone-depth\",\"pool\":\"%s\",\"rw\":\"%s\",\"bs\":%" PRIu64
		       ",\"qd\":%d,\"jobs\":%d,\"results\":[",
		       s.pool, bench_rw_name(s.c.o.rw), s.c.o.bs, s.c.o.qd, s.c.o.jobs);
	} else {
		printf("clone-depth: %s bs=%" PRIu64 " qd=%d jobs=%d %.0f s per depth, pool %s, "
		       "%s\n",
		       bench_rw_name(s.c.o.rw), s.c.o.bs, s.c.o.qd, s.c.o.jobs, s.c.o.time_s,
		       s.pool, s.via ? s.via : "libstrata");
		printf("%-8s %10s %9s %9s %9s %9s %10s %7s %7s\n", "DEPTH", "IOPS", "MB/s",
		       "P50_US", "P99_US", "P99.9_US", "MAX_US", "VS_D0", "ERRORS");
	}
	double base = 0;
	int built = 0, status = 0;
	for (int i = 0; i < nd; i++) {
		char name[16], prev[16], uri[512];
		while (built < depths[i]) {
			snprintf(prev, sizeof(prev), "d%d", built);
			snprintf(name, sizeof(name), "d%d", built + 1);
			if (bench_meta_snap_create(s.fd, s.pool, prev, "s") < 0 ||
			    bench_meta_clone(s.fd, s.pool, prev, "s", name) < 0) {
				goto out;
			}
			built++;
		}
		snprintf(name, sizeof(name), "d%d", depths[i]);
		scen_uri(&s, name, uri, sizeof(uri));
		char label[32];
		snprintf(label, sizeof(label), "depth %d ", depths[i]);
		s.c.o.label = label;
		struct bench_result r;
		const char *u = uri;
		if (bench_run(&s.c.o, &u, 1, &r) < 0) {
			bench_result_free(&r);
			goto out;
		}
		int d = r.ios[1] > r.ios[0] ? 1 : 0;
		double iops = (double)r.ios[d] / (r.elapsed_s > 0 ? r.elapsed_s : 1);
		if (i == 0) {
			base = iops;
		}
		if (s.c.json) {
			printf("%s{\"depth\":%d,\"result\":", i ? "," : "", depths[i]);
			bench_report_json(stdout, &s.c.o, uri, &r);
			printf("}");
		} else {
			snprintf(label, sizeof(label), "%d", depths[i]);
			print_lat_row(label, &r, d, base);
		}
		fflush(stdout);
		if (r.errors || r.mismatches) {
			status = 1;
		}
		bench_result_free(&r);
	}
	if (s.c.json) {
		printf("]}\n");
	}
	if (!s.keep) {
		for (int k = built; k >= 0; k--) {
			char name[16];
			snprintf(name, sizeof(name), "d%d", k);
			(void)bench_meta_volume_remove(s.fd, s.pool, name);
		}
	}
	rc = status;
out:
	if (s.fd >= 0) {
		close(s.fd);
	}
	return rc;
}

/* ---- boot-storm ---- */

#define BS_USAGE                                                                                   \
	"strata-bench boot-storm [--clones N] [--boot-set SIZE] [--vol-size SIZE] "                \
	"[--via nbd://HOST:PORT] [--rw read|randread] [--bs SIZE] [--qd N] [--verify] [--json]"

int bench_boot_storm(int argc, char **argv)
{
	struct scen s;
	struct st_flag flags[BENCH_CLI_NFLAGS + SCEN_NFLAGS + MAX_EXTRA + 1];
	memset(flags, 0, sizeof(flags));
	scen_init(&s, flags);
	int64_t clones = 8;
	uint64_t boot = 256ull << 20, vol_size = 1ull << 30;
	const struct st_flag extra[] = {
		{"clones", ST_FLAG_INT, &clones, "N", "clones booting at once (default 8)"},
		{"boot-set", ST_FLAG_SIZE, &boot, "SIZE",
		 "bytes each clone reads from the start (default 256M)"},
		{"vol-size", ST_FLAG_SIZE, &vol_size, "SIZE", "template size (default 1G)"},
	};
	memcpy(flags + BENCH_CLI_NFLAGS + SCEN_NFLAGS, extra, sizeof(extra));
	s.c.rw = "read";
	s.c.bs = 64 << 10;
	s.c.qd = 4;
	int rc = scen_parse(&s, BS_USAGE, flags, argc, argv);
	if (rc >= 0) {
		goto out;
	}
	if (clones < 1 || clones > 256) {
		rc = bench_usage_error(BS_USAGE, "--clones must be 1 to 256");
		goto out;
	}
	if (boot == 0 || boot > vol_size || boot % s.c.o.bs != 0) {
		rc = bench_usage_error(BS_USAGE,
				       "--boot-set must be a multiple of --bs, at most --vol-size");
		goto out;
	}
	if (s.c.o.rw != BENCH_READ && s.c.o.rw != BENCH_RANDREAD) {
		rc = bench_usage_error(BS_USAGE, "boot-storm reads: --rw read or randread");
		goto out;
	}
	if ((rc = scen_connect(&s)) >= 0) {
		goto out;
	}
	rc = 1;
	char **uris = calloc((size_t)clones, sizeof(char *));
	if (uris == NULL) {
		goto out;
	}
	if (bench_meta_volume_create(s.fd, s.pool, "golden", vol_size) < 0 ||
	    scen_fill(&s, "golden", boot) < 0 ||
	    bench_meta_template_set(s.fd, s.pool, "golden") < 0) {
		goto free_uris;
	}
	for (int64_t i = 0; i < clones; i++) {
		char name[32], uri[512];
		snprintf(name, sizeof(name), "dev%" PRId64, i);
		if (bench_meta_clone(s.fd, s.pool, "golden", "", name) < 0) {
			goto free_uris;
		}
		scen_uri(&s, name, uri, sizeof(uri));
		uris[i] = strdup(uri);
		if (uris[i] == NULL) {
			goto free_uris;
		}
	}
	/* Each clone is one job over the whole boot set; verify would write, so it checks
	 * nothing here beyond I/O errors: the data was written by scen_fill with its own seed. */
	s.c.o.jobs = (int)clones;
	s.c.o.whole_region = true;
	s.c.o.offset = 0;
	s.c.o.span = boot;
	s.c.o.size = boot * (uint64_t)clones;
	s.c.o.time_s = 0;
	s.c.o.verify = false;
	s.c.o.label = "boot-storm ";
	struct bench_result r;
	if (bench_run(&s.c.o, (const char *const *)uris, (int)clones, &r) < 0) {
		bench_result_free(&r);
		goto free_uris;
	}
	double lo = 1e30, hi = 0, sum = 0;
	for (int i = 0; i < r.njobs && r.job_elapsed_s; i++) {
		double t = r.job_elapsed_s[i];
		lo = t < lo ? t : lo;
		hi = t > hi ? t : hi;
		sum += t;
	}
	double mbps = (double)r.bytes[0] / 1e6 / (r.elapsed_s > 0 ? r.elapsed_s : 1);
	if (s.c.json) {
		printf("{\"scenario\":\"boot-storm\",\"pool\":\"%s\",\"clones\":%" PRId64
		       ",\"boot_set\":%" PRIu64 ",\"elapsed_s\":%.3f,\"boot_s\":{\"min\":%.3f,"
		       "\"mean\":%.3f,\"max\":%.3f},\"aggregate_mbps\":%.1f,\"result\":",
		       s.pool, clones, boot, r.elapsed_s, lo, sum / (double)clones, hi, mbps);
		bench_report_json(stdout, &s.c.o, "boot-storm", &r);
		printf("}\n");
	} else {
		printf("boot-storm: %" PRId64 " clones of template %s/golden each read %" PRIu64
		       " MiB (%s bs=%" PRIu64 " qd=%d) through %s\n",
		       clones, s.pool, boot >> 20, bench_rw_name(s.c.o.rw), s.c.o.bs, s.c.o.qd,
		       s.via ? s.via : "libstrata");
		printf("  time to read the boot set: min %.2f s, mean %.2f s, max %.2f s\n", lo,
		       sum / (double)clones, hi);
		printf("  aggregate %.1f MB/s, %.0f IOPS; latency us p50 %.1f p99 %.1f max %.1f; "
		       "errors %" PRIu64 "\n",
		       mbps, (double)r.ios[0] / (r.elapsed_s > 0 ? r.elapsed_s : 1),
		       (double)bench_hist_quantile(&r.hist[0], 0.5) / 1e3,
		       (double)bench_hist_quantile(&r.hist[0], 0.99) / 1e3,
		       (double)r.hist[0].max / 1e3, r.errors);
	}
	rc = r.errors ? 1 : 0;
	bench_result_free(&r);
	if (!s.keep) {
		for (int64_t i = 0; i < clones; i++) {
			char name[32];
			snprintf(name, sizeof(name), "dev%" PRId64, i);
			(void)bench_meta_volume_remove(s.fd, s.pool, name);
		}
	}
free_uris:
	for (int64_t i = 0; i < clones; i++) {
		free(uris[i]);
	}
	free(uris);
out:
	if (s.fd >= 0) {
		close(s.fd);
	}
	return rc;
}

/* ---- snap-under-load ---- */

#define SUL_USAGE                                                                                  \
	"strata-bench snap-under-load [--interval SECS] [--vol-size SIZE] [--via nbd://HOST:PORT]" \
	" [workload flags: --rw randwrite --bs 4k --qd 8 --time 10 ...] [--json]"

struct snapper {
	int fd;
	const char *pool;
	double interval_s;
	_Atomic uint32_t seq;
	_Atomic bool stop;
	double *lat_us;
	size_t n, cap;
	int failed;
};

static void *snapper_main(void *arg)
{
	struct snapper *sp = arg;
	uint64_t next = bench_now_ns() + (uint64_t)(sp->interval_s * 1e9);
	while (!atomic_load(&sp->stop)) {
		if (bench_now_ns() < next) {
			usleep(5000);
			continue;
		}
		next += (uint64_t)(sp->interval_s * 1e9);
		char snap[32];
		snprintf(snap, sizeof(snap), "s%zu", sp->n);
		atomic_fetch_add(&sp->seq, 1); /* odd: in progress */
		double t0 = bench_now_us();
		int rc = bench_meta_snap_create(sp->fd, sp->pool, "vol", snap);
		double t1 = bench_now_us();
		atomic_fetch_add(&sp->seq, 1);
		if (rc < 0) {
			sp->failed++;
			continue;
		}
		if (sp->n == sp->cap) {
			size_t nc = sp->cap ? sp->cap * 2 : 64;
			double *p = realloc(sp->lat_us, nc * sizeof(double));
			if (p == NULL) {
				continue;
			}
			sp->lat_us = p;
			sp->cap = nc;
		}
		sp->lat_us[sp->n++] = t1 - t0;
	}
	return NULL;
}

int bench_snap_under_load(int argc, char **argv)
{
	struct scen s;
	struct st_flag flags[BENCH_CLI_NFLAGS + SCEN_NFLAGS + MAX_EXTRA + 1];
	memset(flags, 0, sizeof(flags));
	scen_init(&s, flags);
	const char *interval = "1";
	uint64_t vol_size = 1ull << 30;
	const struct st_flag extra[] = {
		{"interval", ST_FLAG_STRING, &interval, "SECS",
		 "seconds between snapshots (default 1)"},
		{"vol-size", ST_FLAG_SIZE, &vol_size, "SIZE", "volume size (default 1G)"},
	};
	memcpy(flags + BENCH_CLI_NFLAGS + SCEN_NFLAGS, extra, sizeof(extra));
	s.c.rw = "randwrite";
	s.c.qd = 8;
	int rc = scen_parse(&s, SUL_USAGE, flags, argc, argv);
	if (rc >= 0) {
		goto out;
	}
	char *end;
	double iv = strtod(interval, &end);
	if (end == interval || *end != '\0' || iv < 0.05 || iv > 3600) {
		rc = bench_usage_error(SUL_USAGE, "--interval '%s': want 0.05 to 3600 seconds",
				       interval);
		goto out;
	}
	if (s.c.o.span == 0 && vol_size > (256ull << 20)) {
		s.c.o.span = 256ull << 20;
	}
	if ((rc = scen_connect(&s)) >= 0) {
		goto out;
	}
	rc = 1;
	if (bench_meta_volume_create(s.fd, s.pool, "vol", vol_size) < 0) {
		goto out;
	}
	struct snapper sp = {.pool = s.pool, .interval_s = iv};
	sp.fd = bench_meta_connect(s.c.meta);
	if (sp.fd < 0) {
		goto out;
	}
	s.c.o.snap_seq = &sp.seq;
	s.c.o.label = "snap-under-load ";
	char uri[512];
	scen_uri(&s, "vol", uri, sizeof(uri));
	pthread_t th;
	if (pthread_create(&th, NULL, snapper_main, &sp) != 0) {
		close(sp.fd);
		goto out;
	}
	struct bench_result r;
	const char *u = uri;
	int brc = bench_run(&s.c.o, &u, 1, &r);
	atomic_store(&sp.stop, true);
	pthread_join(th, NULL);
	close(sp.fd);
	if (brc < 0) {
		bench_result_free(&r);
		free(sp.lat_us);
		goto out;
	}
	struct bench_stats st = {0};
	if (sp.n > 0) {
		bench_stats_compute(sp.lat_us, sp.n, &st);
	}
	int d = r.ios[1] >= r.ios[0] ? 1 : 0;
	const struct bench_hist *all = &r.hist[d], *during = &r.snap_hist;
	if (s.c.json) {
		printf("{\"scenario\":\"snap-under-load\",\"pool\":\"%s\",\"snapshots\":%zu,"
		       "\"snapshot_failures\":%d,\"snap_create_ms\":{\"median\":%.3f,\"p99\":%.3f,"
		       "\"max\":%.3f},\"overlapping_ios\":%" PRIu64 ",\"overlapping_lat_us\":{"
		       "\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},\"result\":",
		       s.pool, sp.n, sp.failed, st.median_us / 1e3, st.p99_us / 1e3,
		       st.max_us / 1e3, during->total,
		       (double)bench_hist_quantile(during, 0.5) / 1e3,
		       (double)bench_hist_quantile(during, 0.99) / 1e3, (double)during->max / 1e3);
		bench_report_json(stdout, &s.c.o, uri, &r);
		printf("}\n");
	} else {
		bench_report_text(stdout, &s.c.o, uri, &r);
		printf("snapshots: %zu taken every %.2f s (%d failed); create ms median %.3f p99 "
		       "%.3f max %.3f\n",
		       sp.n, iv, sp.failed, st.median_us / 1e3, st.p99_us / 1e3, st.max_us / 1e3);
		printf("%-26s %10s %9s %9s %9s %10s\n", "I/O", "COUNT", "P50_US", "P99_US",
		       "P99.9_US", "MAX_US");
		const struct {
			const char *name;
			const struct bench_hist *h;
		} rows[] = {{"all", all}, {"overlapping a snapshot", during}};
		for (size_t i = 0; i < 2; i++) {
			const struct bench_hist *h = rows[i].h;
			printf("%-26s %10" PRIu64 " %9.1f %9.1f %9.1f %10.1f\n", rows[i].name,
			       h->total, (double)bench_hist_quantile(h, 0.5) / 1e3,
			       (double)bench_hist_quantile(h, 0.99) / 1e3,
			       (double)bench_hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3);
		}
		printf("per second (a spike shows as max >> p99):\n%6s %10s %9s %9s %10s\n", "T_S",
		       "IOPS", "P50_US", "P99_US", "MAX_US");
		for (size_t i = 0; i < r.nticks; i++) {
			const struct bench_tick *t = &r.ticks[i];
			printf("%6.0f %10" PRIu64 " %9.1f %9.1f %10.1f\n", t->t, t->ios,
			       (double)t->p50_ns / 1e3, (double)t->p99_ns / 1e3,
			       (double)t->max_ns / 1e3);
		}
	}
	rc = (r.errors || r.mismatches || sp.failed) ? 1 : 0;
	if (r.errors) {
		fprintf(stderr, "strata-bench: %" PRIu64 " I/O errors\n", r.errors);
	}
	bench_result_free(&r);
	free(sp.lat_us);
out:
	if (s.fd >= 0) {
		close(s.fd);
	}
	return rc;
}
