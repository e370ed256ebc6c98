#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/cpu_slice.h"

/* The kernel's struct sched_attr, as common/sched.c spells it. */
struct attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

struct probe {
	uint64_t before, after;
	int nice_after;
};

static uint64_t slice_now(void)
{
	struct attr a;
	memset(&a, 0, sizeof(a));
	cr_assert_eq(syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0), 0, "sched_getattr: %m");
	return a.runtime;
}

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	cr_assert_eq(setpriority(PRIO_PROCESS, (id_t)gettid(), 5), 0, "setpriority: %m");
	p->before = slice_now();
	st_sched_short_slice();
	st_sched_short_slice(); /* a second call does nothing */
	p->after = slice_now();
	p->nice_after = getpriority(PRIO_PROCESS, 0);
	return NULL;
}

static struct probe run_probe(const char *env)
{
	struct probe p;
	pthread_t t;
	if (env) {
		setenv("STRATA_SLICE_US", env, 1);
	} else {
		unsetenv("STRATA_SLICE_US");
	}
	cr_assert_eq(pthread_create(&t, NULL, probe_main, &p), 0);
	pthread_join(t, NULL);
	return p;
}

/* Custom slices for SCHED_OTHER threads came with Linux 6.12; before, sched_getattr reports 0
 * for them and the request changes nothing. */
static bool kernel_has_slices(void)
{
	struct utsname u;
	int major = 0, minor = 0;
	cr_assert_eq(uname(&u), 0);
	sscanf(u.release, "%d.%d", &major, &minor);
	return major > 6 || (major == 6 && minor >= 12);
}

Test(cpu_slice, the_default_slice_is_short_and_the_nice_value_is_kept)
{
	struct probe p = run_probe(NULL);
	cr_expect_eq(p.nice_after, 5, "nice %d after the call, want 5", p.nice_after);
	if (kernel_has_slices()) {
		cr_expect_neq(p.before, (uint64_t)ST_SCHED_SLICE_US * 1000u,
			      "the kernel's default slice is already ours: the test shows nothing");
		cr_expect_eq(p.after, (uint64_t)ST_SCHED_SLICE_US * 1000u, "slice %llu ns",
			     (unsigned long long)p.after);
	} else {
		cr_expect_eq(p.after, p.before);
	}
}

Test(cpu_slice, the_environment_sets_clamps_or_turns_it_off)
{
	struct probe p = run_probe("250");
	if (kernel_has_slices()) {
		cr_expect_eq(p.after, 250000u, "STRATA_SLICE_US=250: slice %llu ns",
			     (unsigned long long)p.after);
		p = run_probe("5");
		cr_expect_eq(p.after, 100000u,
			     "STRATA_SLICE_US=5 is raised to the kernel's 100 us");
	}
	p = run_probe("0");
	cr_expect_eq(p.after, p.before, "STRATA_SLICE_US=0 changed the slice");
	cr_expect_eq(p.nice_after, 5);
}
