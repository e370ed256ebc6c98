/* strata-bench: a scenario dispatcher. `strata-bench SCENARIO [flags]`; add a scenario by adding
 * a row to bench_scenarios. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const struct bench_scenario bench_scenarios[] = {
	{"run", bench_run_main,
	 "one workload on one target: strata://pool/vol, nbd://host:port/export, "
	 "iscsi://host:port/iqn/lun"},
	{"clone-depth", bench_clone_depth, "IOPS and p99 at clone depths 0..64"},
	{"boot-storm", bench_boot_storm,
	 "N clones of one template read the boot set at once: time to boot, aggregate MB/s"},
	{"snap-under-load", bench_snap_under_load,
	 "write at full speed, snapshot every second, report the latency spikes"},
	{"metaops", bench_metaops,
	 "latency of snapshot create and clone create on strata-meta, 1 GiB vs 1 TiB volume"},
	{NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: strata-bench SCENARIO [flags]   (strata-bench SCENARIO --help)\n"
		"       strata-bench TARGET [flags]     (same as: strata-bench run TARGET ...)\n\n"
		"scenarios:\n");
	for (const struct bench_scenario *s = bench_scenarios; s->name; s++) {
		fprintf(f, "  %-16s %s\n", s->name, s->help);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strstr(argv[1], "://") != NULL) {
		return bench_run_main(argc, argv); /* argv[0] stands in for "run" */
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
