/* strata-bench: a scenario dispatcher. `strata-bench SCENARIO [flags]`; add a scenario by adding
 * a row to bench_scenarios. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const struct bench_scenario bench_scenarios[] = {
	{"metaops", bench_metaops,
	 "latency of snapshot create and clone create on strata-meta, 1 GiB vs 1 TiB volume"},
	{NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: strata-bench SCENARIO [flags]   (strata-bench SCENARIO --help)\n\n"
		   "scenarios:\n");
	for (const struct bench_scenario *s = bench_scenarios; s->name; s++) {
		fprintf(f, "  %-12s %s\n", s->name, s->help);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (const struct bench_scenario *s = bench_scenarios; s->name; s++) {
		if (strcmp(argv[1], s->name) == 0) {
			return s->run(argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "strata-bench: unknown scenario '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
