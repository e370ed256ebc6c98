/* Reporting: the text summary, JSON, and the SVG plot through gnuplot. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "internal.h"

static const double quantiles[] = {0.5, 0.9, 0.99, 0.999};
static const char *const qnames[] = {"p50", "p90", "p99", "p99.9"};

void bench_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			fprintf(f, "\\%c", ch);
		} else if (ch < 0x20) {
			fprintf(f, "\\u%04x", ch);
		} else {
			fputc(ch, f);
		}
	}
	fputc('"', f);
}

static void text_dir(FILE *f, const char *name, const struct bench_result *r, int d)
{
	const struct bench_hist *h = &r->hist[d];
	double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
	fprintf(f, "  %-5s %10.0f IOPS %10.1f MB/s %12" PRIu64 " ios   lat us:", name,
		(double)r->ios[d] / el, (double)r->bytes[d] / 1e6 / el, r->ios[d]);
	for (size_t i = 0; i < 4; i++) {
		fprintf(f, " %s %.1f", qnames[i],
			(double)bench_hist_quantile(h, quantiles[i]) / 1e3);
	}
	fprintf(f, " max %.1f mean %.1f\n", (double)h->max / 1e3, bench_hist_mean(h) / 1e3);
}

void bench_report_text(FILE *f, const struct bench_opts *o, const char *target,
		       const struct bench_result *r)
{
	fprintf(f, "%s %s bs=%" PRIu64 " qd=%d jobs=%d", target, bench_rw_name(o->rw), o->bs, o->qd,
		o->jobs);
	if (o->rw == BENCH_RANDRW) {
		fprintf(f, " rwmix=%d", o->rwmix);
	}
	fprintf(f, " %.1f s\n", r->elapsed_s);
	if (r->ios[0] > 0 || (o->rw != BENCH_WRITE && o->rw != BENCH_RANDWRITE)) {
		text_dir(f, "read", r, 0);
	}
	if (r->ios[1] > 0 || o->rw == BENCH_WRITE || o->rw == BENCH_RANDWRITE ||
	    o->rw == BENCH_RANDRW) {
		text_dir(f, "write", r, 1);
	}
	fprintf(f, "  errors %" PRIu64, r->errors);
	if (o->verify) {
		fprintf(f, "   verify: %" PRIu64 " sectors checked, %" PRIu64 " mismatches",
			r->verified, r->mismatches);
	}
	fputc('\n', f);
}

static void json_dir(FILE *f, const struct bench_result *r, int d)
{
	const struct bench_hist *h = &r->hist[d];
	double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
	fprintf(f, "{\"ios\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"iops\":%.1f,\"mbps\":%.3f,",
		r->ios[d], r->bytes[d], (double)r->ios[d] / el, (double)r->bytes[d] / 1e6 / el);
	fprintf(f, "\"lat_us\":{");
	for (size_t i = 0; i < 4; i++) {
		fprintf(f, "\"%s\":%.1f,", qnames[i],
			(double)bench_hist_quantile(h, quantiles[i]) / 1e3);
	}
	fprintf(f, "\"min\":%.1f,\"max\":%.1f,\"mean\":%.1f}}", (double)h->min / 1e3,
		(double)h->max / 1e3, bench_hist_mean(h) / 1e3);
}

void bench_report_json(FILE *f, const struct bench_opts *o, const char *target,
		       const struct bench_result *r)
{
	fprintf(f, "{\"target\":");
	bench_json_string(f, target);
	fprintf(f,
		",\"rw\":\"%s\",\"bs\":%" PRIu64 ",\"qd\":%d,\"jobs\":%d,\"rwmix\":%d,"
		"\"offset\":%" PRIu64 ",\"span\":%" PRIu64 ",\"elapsed_s\":%.3f,",
		bench_rw_name(o->rw), o->bs, o->qd, o->jobs, o->rwmix, o->offset, o->span,
		r->elapsed_s);
	fprintf(f, "\"read\":");
	json_dir(f, r, 0);
	fprintf(f, ",\"write\":");
	json_dir(f, r, 1);
	fprintf(f,
		",\"errors\":%" PRIu64 ",\"verify\":%s,\"verified_sectors\":%" PRIu64
		",\"mismatches\":%" PRIu64 ",\"timeline\":[",
		r->errors, o->verify ? "true" : "false", r->verified, r->mismatches);
	for (size_t i = 0; i < r->nticks; i++) {
		const struct bench_tick *t = &r->ticks[i];
		fprintf(f,
			"%s{\"t\":%.0f,\"iops\":%" PRIu64 ",\"mbps\":%.3f,\"p50_us\":%.1f,"
			"\"p99_us\":%.1f,\"max_us\":%.1f}",
			i ? "," : "", t->t, t->ios, (double)t->bytes / 1e6, (double)t->p50_ns / 1e3,
			(double)t->p99_ns / 1e3, (double)t->max_ns / 1e3);
	}
	fprintf(f, "]}");
}

int bench_plot(const char *path, const char *title, const struct bench_result *r)
{
	if (r->nticks == 0) {
		fprintf(stderr, "strata-bench: --plot: the run was shorter than one second\n");
		return -EINVAL;
	}
	FILE *g = popen("gnuplot", "w");
	if (g == NULL) {
		fprintf(stderr, "strata-bench: --plot: cannot run gnuplot: %s\n", strerror(errno));
		return -errno;
	}
	fprintf(g, "$d << EOD\n");
	for (size_t i = 0; i < r->nticks; i++) {
		const struct bench_tick *t = &r->ticks[i];
		fprintf(g, "%.0f %" PRIu64 " %.1f %.1f %.1f\n", t->t, t->ios,
			(double)t->p50_ns / 1e3, (double)t->p99_ns / 1e3, (double)t->max_ns / 1e3);
	}
	fprintf(g, "EOD\n");
	fprintf(g, "set terminal svg size 900,640 dynamic enhanced font 'sans,11'\n"
		   "set output '");
	for (const char *p = path; *p; p++) {
		if (*p == '\'') {
			fputc('\'', g); /* gnuplot doubles quotes inside '...' */
		}
		fputc(*p, g);
	}
	fprintf(g, "'\nset multiplot layout 2,1 title '");
	for (const char *p = title; *p; p++) {
		if (*p == '\'') {
			fputc('\'', g);
		}
		fputc(*p, g);
	}
	fprintf(g, "' noenhanced\n"
		   "set grid\nset key top right\nset xlabel 'seconds'\n"
		   "set ylabel 'IOPS'\nset yrange [0:*]\n"
		   "plot $d using 1:2 with linespoints title 'IOPS'\n"
		   "set ylabel 'latency (us)'\nset logscale y\nset yrange [*:*]\n"
		   "plot $d using 1:3 with lines title 'p50', $d using 1:4 with lines title 'p99', "
		   "$d using 1:5 with lines title 'max'\n"
		   "unset multiplot\n");
	int st = pclose(g);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "strata-bench: --plot: gnuplot failed%s (install gnuplot-nox)\n",
			WIFEXITED(st) && WEXITSTATUS(st) == 127 ? ": not found" : "");
		return -EIO;
	}
	return 0;
}
