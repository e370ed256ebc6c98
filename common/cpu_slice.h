/*
 * Scheduler hints for the threads that carry requests.
 */
#ifndef STRATA_COMMON_CPU_SLICE_H
#define STRATA_COMMON_CPU_SLICE_H

/* The slice a request-carrying thread asks for when STRATA_SLICE_US is unset, in us. */
#define ST_SCHED_SLICE_US 100

/*
 * Ask the kernel for a short time slice for the calling thread (EEVDF's per-task slice,
 * sched_setattr's sched_runtime for a SCHED_OTHER thread, Linux 6.12 and later), so that a
 * wakeup preempts a thread running a longer slice instead of waiting for it to end. The thread
 * keeps its policy and nice value. STRATA_SLICE_US (100-100000) sets the slice, 0 leaves the
 * kernel's default. Done once per thread; later calls return at once. An older kernel, or one
 * that refuses, keeps its default slice: nothing else changes, and it is logged once per
 * process at debug level.
 */
void st_sched_short_slice(void);

#endif
