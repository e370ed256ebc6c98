# shellcheck shell=bash
# bench/lib.sh: helpers the bench scripts share (sourced, not run).

# free_port: print a TCP port on 127.0.0.1 that is free now.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# write_through FILE SIZE: write FILE once from start to SIZE (fio, 1 MiB O_DIRECT writes,
# QD8), then sync, so that a blockd started on it finds its data file written through, as
# a node that has run for a while has it. On a fresh sparse file blockd's prewriter
# (blockd/prewrite.c) writes zeros ahead of allocation while the jobs run, and ext4 cannot
# make an allocating O_DIRECT write without blocking. fio's report goes to FILE.fio.out.
# Returns fio's status.
write_through() {
	local file=$1 size=$2
	fio --name=prewrite --filename="$file" --ioengine=io_uring --direct=1 --rw=write \
		--bs=1M --iodepth=8 --size="$size" --output="$file.fio.out" >/dev/null 2>&1 || return
	sync
}

# bench_tmp NAME: TMP, a fresh directory under ${TMPDIR:-/tmp}, and PIDS, the processes started
# for the run; at exit every pid in PIDS is stopped and waited for, and TMP is removed.
bench_tmp() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-$1.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
}
bench_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}

# bench_meta: strata-meta from $BIN on a free loopback port, its catalog under TMP; sets META.
bench_meta() {
	META=127.0.0.1:$(free_port)
	"$BIN/strata-meta" --listen "$META" --data "$TMP/meta" --log-level warn >"$TMP/meta.log" 2>&1 &
	PIDS+=($!)
	sleep 0.5
}
