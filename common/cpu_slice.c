/*
 * Short scheduler slices for request-carrying threads (see cpu_slice.h).
 *
 * Why: on a host where the gateway, blockd and the client share few CPUs, a request crosses
 * several wakeups, and each woken thread could wait for the running one's slice (1.4 ms by
 * default on this project's 2-CPU test machine) to end. EEVDF gives a woken task with an earlier
 * virtual deadline the CPU at once, and a task's deadline is its slice after its eligible time: a
 * short slice makes our threads' wakeups preempt. The total CPU share does not change (that is the
 * nice value), only when it is handed out. docs/ARCHITECTURE.md, "Session 8", has the measurement.
 */
#include "common/cpu_slice.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/flags.h"
#include "common/log.h"

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h, version 1: 56 bytes).
 * Its header clashes with glibc's struct sched_param, so it is spelled out here. */
struct st_sched_attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
	uint32_t sched_util_min;
	uint32_t sched_util_max;
};

static _Thread_local bool tls_done;

static unsigned slice_us(void)
{
	unsigned n = st_env_uint("STRATA_SLICE_US", ST_SCHED_SLICE_US, 100000);
	return n == 0 || n >= 100 ? n : 100; /* the kernel's least slice is 100 us */
}

void st_sched_short_slice(void)
{
	static atomic_bool warned;
	struct st_sched_attr a;
	unsigned us;

	if (tls_done) {
		return;
	}
	tls_done = true;
	us = slice_us();
	if (us == 0 || sched_getscheduler(0) != SCHED_OTHER) {
		return;
	}
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.sched_policy = SCHED_OTHER;
	errno = 0;
	a.sched_nice = getpriority(PRIO_PROCESS, 0); /* this thread's nice, kept */
	a.sched_runtime = (uint64_t)us * 1000u;
	if (syscall(SYS_sched_setattr, 0, &a, 0) != 0 && !atomic_exchange(&warned, true)) {
		st_debug("sched_setattr (slice %u us): %s; keeping the default slice", us,
			 strerror(errno));
	}
}
