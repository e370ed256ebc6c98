/*
 * Reservations: SPC-2 RESERVE/RELEASE and SPC-4 PERSISTENT RESERVE IN/OUT.
 *
 * State is per volume (or snapshot): registrations (I_T nexus -> key), the persistent
 * reservation (holder, type) and the SPC-2 reservation. It lives in strata-meta, so every
 * strata-iscsi process serving the volume sees one state and it survives restarts:
 *
 *   isc_pr (per open LU, a cached copy + its meta version)
 *      |  load:   PR_GET {spec, known_version} -> unchanged, or the newer record
 *      |  commit: PR_UPDATE {spec, expected_version, record} -> new version, or -EAGAIN
 *      v
 *   strata-meta: one RocksDB record per volume, compare-and-swap on `version`
 *
 * Every PR OUT (and RESERVE/RELEASE) is load -> decide -> commit; a lost compare-and-swap
 * (another gateway changed the state in between) reloads and decides again, so two gateways
 * serialise their PR OUT commands through meta.
 *
 * Keeping the cache current without asking meta per command: meta pushes changes.
 *
 *   g_watch: one PR_WATCH always outstanding on the reactor (st_client), re-armed on every
 *            reply with known_seq = the (instance, seq) it reported; that is our ack
 *   meta:    pr_seq +1 per PR_UPDATE; answers the watches at once; holds the PR_UPDATE's
 *            reply until every watcher acked the new seq (or 5 s, then closes the laggards)
 *   here:    (instance, seq) moved --> gen++ : every LU's cache is stale
 *            isc_pr_check: trusted iff watch reply < 2 s ago && pr->loaded_gen == gen,
 *            else one blocking PR_GET (whose reply carries (instance, seq): loaded_gen = gen)
 *
 * So once a PR OUT through another gateway has completed, this gateway has moved gen and its
 * next command reloads: a reservation or preempt fences the very next command here, and the
 * data path costs no meta round trip. The 2 s lease is shorter than meta's 5 s timeout: a
 * gateway whose reactor was stuck and that meta gave up on trusts nothing when it resumes.
 * While the watch is down (meta away, reconnect with back-off) every such command asks meta,
 * as before the watch: strict. --pr-cache-ms N additionally trusts a cache confirmed less
 * than N ms ago whatever the watch says (an explicit opt-in to a window of N ms).
 *
 * PR_GET and PR_UPDATE are blocking st_rpc_calls on the reactor thread (2 s and 8 s timeouts),
 * as login's catalog calls are; they are rare now (a reload per LU after a change, PR IN/OUT).
 * A PR_UPDATE carries our watch's gateway id: meta does not wait for our own ack while we
 * are blocked in it (its reply's seq moves gen before we serve anything again).
 * If meta cannot be reached, PR IN/OUT fail with BUSY, and other commands are checked against
 * the cached state (no PR change can be committed while meta is down).
 *
 * Without isc_pr_init() (unit tests), the state stays in this process.
 *
 * An I_T nexus is named by its initiator port "iqn...,i,0x<ISID>" and target port
 * "<target iqn>,t,0x0001"; every gateway presents the target as portal group 1, so ALL_TG_PT
 * changes nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"

#define PR_MAX_REGS 64
#define PR_PORT_MAX (ISC_NAME_MAX + 32)
#define PR_RETRIES  32
#define PR_META_MS  2000
/* A PR_UPDATE reply may be held by meta until every watcher acknowledged it (5 s at most). */
#define PR_UPDATE_MS 8000
/* The watch lease: trust caches only if the last watch reply came less than this ago. Shorter
 * than meta's 5 s acknowledgement timeout, so a gateway meta gave up on has stopped trusting. */
#define PR_LEASE_MS    2000
#define PR_BACKOFF_MIN 100
#define PR_BACKOFF_MAX 2000

enum pr_type {
	PR_NONE = 0,
	PR_WE = 1,
	PR_EA = 3,
	PR_WE_RO = 5,
	PR_EA_RO = 6,
	PR_WE_AR = 7,
	PR_EA_AR = 8,
};

struct pr_reg {
	char port[PR_PORT_MAX];
	char tport[PR_PORT_MAX];
	uint64_t key;
};

struct pr_state {
	uint64_t version; /* meta's compare-and-swap version of this state */
	uint32_t generation;
	struct pr_reg regs[PR_MAX_REGS];
	unsigned nregs;
	int holder;             /* index into regs, -1 for none; all-registrants types use -2 */
	uint8_t type;           /* enum pr_type when a reservation exists */
	char spc2[PR_PORT_MAX]; /* SPC-2 RESERVE holder, "" for none */
};

struct isc_pr {
	uint64_t volume_id;
	char spec[ISC_NAME_MAX];
	char tport[PR_PORT_MAX];
	struct pr_state cache; /* the newest state seen (the whole state without meta) */
	uint64_t checked_ms;   /* when cache was last confirmed by meta */
	uint64_t loaded_gen;   /* g_watch.gen the cache is current at (0: not known) */
};

/* The meta connection: one blocking fd, used only from the reactor thread. */
static struct {
	bool on;
	char addr[256];
	int fd;
	int tmo_ms; /* the fd's current send/receive timeout */
	unsigned cache_ms;
	uint64_t warned_ms;
} g_meta = {.fd = -1};

/*
 * The PR watch: an st_client on the reactor with one PR_WATCH always outstanding.
 *
 *   (instance, seq) from any meta reply --moved?--> gen++ (every LU's cache is now stale)
 *   LU cache trusted  <=>  last watch reply < PR_LEASE_MS ago  &&  pr->loaded_gen == gen
 *
 * Re-arming with known_seq = seq is the acknowledgement meta waits for before it answers a
 * PR_UPDATE; it is sent only after gen moved, so once another gateway's change is committed,
 * no cache older than it is trusted here.
 */
static struct {
	struct st_reactor *r;
	struct st_client *cl;
	bool stopping;
	bool failed; /* the last attempt failed (log the recovery) */
	uint64_t gateway;
	uint64_t seq, instance;
	uint64_t gen;
	uint64_t last_reply_ms;
	unsigned backoff_ms;
	uint64_t warned_ms;
	struct st_io retry;
} g_watch = {.gen = 1};

/* (instance, seq) as of which a meta reply was made. Moves gen when it is news. Returns true
 * if state read in that reply is current at the new gen (false: older than what we know). */
static bool watch_note(uint64_t seq, uint64_t instance)
{
	if (instance == 0)
		return false; /* a meta without PR_WATCH */
	if (instance != g_watch.instance || seq > g_watch.seq) {
		g_watch.instance = instance;
		g_watch.seq = seq;
		g_watch.gen++;
		return true;
	}
	return seq == g_watch.seq;
}

static bool watch_trusts(const struct isc_pr *pr, uint64_t now)
{
	return g_watch.r && !g_watch.stopping && g_watch.last_reply_ms &&
	       now - g_watch.last_reply_ms < PR_LEASE_MS && pr->loaded_gen == g_watch.gen;
}

static void watch_arm(void);
static void watch_fail(int err);

static void watch_retry_cb(void *arg, int res)
{
	struct st_client *old = g_watch.cl;
	int rc;

	(void)arg;
	if (g_watch.stopping || res == -ECANCELED)
		return;
	g_watch.cl = NULL; /* its failing calls are ignored from now on */
	if (old)
		st_client_close(old);
	rc = st_client_connect(g_watch.r, g_meta.addr, &g_watch.cl);
	if (rc) {
		g_watch.cl = NULL;
		watch_fail(rc); /* the timer is idle again inside its own callback */
		return;
	}
	watch_arm();
}

/* The watch failed: reconnect after a growing back-off. Caches stay untrusted meanwhile (the
 * lease runs out), so commands fall back to asking meta. */
static void watch_fail(int err)
{
	/* Stop trusting at once rather than when the lease runs out: meta no longer waits for a
	 * connection that is gone, so changes may commit without our acknowledgement from now. */
	g_watch.last_reply_ms = 0;
	if (g_watch.stopping || g_watch.retry.busy)
		return;
	if (!g_watch.failed || st_now_ms() - g_watch.warned_ms > 10000) {
		g_watch.warned_ms = st_now_ms();
		st_warn("reservation watch on meta %s: %s (asking meta before every command "
			"meanwhile)",
			g_meta.addr, strerror(-err));
	}
	g_watch.failed = true;
	g_watch.backoff_ms = g_watch.backoff_ms ? g_watch.backoff_ms * 2 : PR_BACKOFF_MIN;
	if (g_watch.backoff_ms > PR_BACKOFF_MAX)
		g_watch.backoff_ms = PR_BACKOFF_MAX;
	st_reactor_timer(g_watch.r, &g_watch.retry, g_watch.backoff_ms, watch_retry_cb, NULL);
}

static void watch_cb(void *arg, int err, struct st_frame *reply)
{
	Strata__Meta__PrWatchReply *rep;

	if (g_watch.stopping || arg != g_watch.cl)
		return; /* a client we already replaced */
	if (!err && reply) {
		rep = strata__meta__pr_watch_reply__unpack(NULL, reply->hdr.hdr_len, reply->msg);
		if (rep && rep->instance) {
			g_watch.last_reply_ms = st_now_ms();
			(void)watch_note(rep->seq, rep->instance);
			strata__meta__pr_watch_reply__free_unpacked(rep, NULL);
			if (g_watch.failed)
				st_info("reservation watch on meta %s: up", g_meta.addr);
			g_watch.failed = false;
			g_watch.backoff_ms = 0;
			watch_arm();
			return;
		}
		if (rep)
			strata__meta__pr_watch_reply__free_unpacked(rep, NULL);
		err = -EBADMSG;
	}
	watch_fail(err ? err : -EBADMSG);
}

/* Send the next PR_WATCH; known_seq = seq acknowledges everything gen reflects. */
static void watch_arm(void)
{
	Strata__Meta__PrWatchReq req = STRATA__META__PR_WATCH_REQ__INIT;
	int rc;

	req.known_seq = g_watch.instance ? g_watch.seq : 0;
	req.instance = g_watch.instance;
	req.gateway = g_watch.gateway;
	rc = st_client_call(g_watch.cl, STRATA__META__META_MSG_TYPE__META_PR_WATCH, 0, &req.base,
			    NULL, 0, watch_cb, g_watch.cl);
	if (rc)
		watch_fail(rc);
}

int isc_pr_watch_start(struct st_reactor *r)
{
	int rc;

	g_watch.r = r;
	g_watch.stopping = false;
	while (!g_watch.gateway)
		if (getrandom(&g_watch.gateway, sizeof(g_watch.gateway), 0) < 0)
			g_watch.gateway = st_now_ms() ^ ((uint64_t)getpid() << 32);
	if (!g_meta.on)
		return 0;
	rc = st_client_connect(r, g_meta.addr, &g_watch.cl);
	if (rc) {
		g_watch.cl = NULL;
		watch_fail(rc);
		return rc;
	}
	watch_arm();
	return 0;
}

void isc_pr_watch_stop(void)
{
	struct st_client *cl = g_watch.cl;

	g_watch.stopping = true;
	g_watch.cl = NULL;
	if (cl)
		st_client_close(cl);
	/* A pending retry timer is cancelled by st_reactor_destroy; its callback sees stopping. */
}

void isc_pr_init(const char *meta, unsigned cache_ms)
{
	if (!meta)
		meta = getenv("STRATA_META");
	snprintf(g_meta.addr, sizeof(g_meta.addr), "%s", meta ? meta : "127.0.0.1:7700");
	g_meta.cache_ms = cache_ms;
	g_meta.on = true;
}

/* One blocking request to meta (timeout tmo_ms); reconnects once on a transport failure.
 * Returns the reply status (0 or -errno) with *reply filled, or a transport -errno with
 * *reply empty. */
static int meta_call(uint16_t type, const ProtobufCMessage *msg, struct st_frame *reply, int tmo_ms)
{
	char err[256] = "";
	int rc = -ENOTCONN;

	/* Empty it before anything can fail: with meta down both connects fail, st_rpc_call
	 * (which clears it too) never runs, and the callers still st_frame_release(reply). The
	 * target used to free stack garbage there (SIGSEGV) on a command once meta was down. */
	memset(reply, 0, sizeof(*reply));
	for (int attempt = 0; attempt < 2; attempt++) {
		if (g_meta.fd < 0) {
			g_meta.fd = st_tcp_connect(g_meta.addr, PR_META_MS);
			if (g_meta.fd < 0) {
				rc = g_meta.fd;
				g_meta.fd = -1;
				continue;
			}
			g_meta.tmo_ms = 0;
		}
		if (g_meta.tmo_ms != tmo_ms) {
			/* A hung meta must not hang the reactor forever. */
			struct timeval tv = {tmo_ms / 1000, (tmo_ms % 1000) * 1000};
			setsockopt(g_meta.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(g_meta.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			g_meta.tmo_ms = tmo_ms;
		}
		memset(reply, 0, sizeof(*reply));
		rc = st_rpc_call(g_meta.fd, type, 0, msg, NULL, 0, reply, err, sizeof(err));
		if (reply->hdr.magic)
			return rc; /* a reply arrived: its status */
		close(g_meta.fd);
		g_meta.fd = -1;
	}
	return rc;
}

static void state_clear(struct pr_state *st)
{
	memset(st, 0, offsetof(struct pr_state, regs));
	st->nregs = 0;
	st->holder = -1;
	st->type = PR_NONE;
	st->spc2[0] = '\0';
}

static bool all_registrants(uint8_t type)
{
	return type == PR_WE_AR || type == PR_EA_AR;
}

/* A meta record into st. Returns 0 or -EUCLEAN (more registrations than we hold). */
static int state_from_rec(struct pr_state *st, const Strata__Meta__PrRecord *r, uint64_t version)
{
	if (r->n_regs > PR_MAX_REGS)
		return -EUCLEAN;
	state_clear(st);
	st->version = version;
	st->generation = r->generation;
	st->type = (uint8_t)r->type;
	for (size_t i = 0; i < r->n_regs; i++) {
		snprintf(st->regs[i].port, PR_PORT_MAX, "%s", r->regs[i]->initiator_port);
		snprintf(st->regs[i].tport, PR_PORT_MAX, "%s", r->regs[i]->target_port);
		st->regs[i].key = r->regs[i]->key;
		if (r->regs[i]->holder && st->type != PR_NONE && !all_registrants(st->type))
			st->holder = (int)i;
	}
	st->nregs = (unsigned)r->n_regs;
	if (st->type != PR_NONE && all_registrants(st->type))
		st->holder = -2;
	if (st->holder == -1)
		st->type = PR_NONE;
	snprintf(st->spc2, PR_PORT_MAX, "%s", r->spc2_holder);
	return 0;
}

/* Why a refresh asks meta, for the debug log (tests count these). */
static const char *refresh_why(bool force, uint64_t now)
{
	if (force)
		return "load";
	if (!g_watch.last_reply_ms || now - g_watch.last_reply_ms >= PR_LEASE_MS)
		return "no watch";
	return "stale";
}

/* Bring pr->cache up to date. force: ask meta whatever the cache age. Returns 0, or -errno
 * when meta could not confirm the state (the cache is then unchanged). */
static int pr_refresh(struct isc_pr *pr, bool force)
{
	Strata__Meta__PrGetReq req = STRATA__META__PR_GET_REQ__INIT;
	Strata__Meta__PrGetReply *rep;
	struct st_frame f;
	uint64_t now = st_now_ms();
	int rc;

	if (!g_meta.on)
		return 0;
	if (!force && watch_trusts(pr, now))
		return 0;
	if (!force && g_meta.cache_ms && now - pr->checked_ms < g_meta.cache_ms)
		return 0;
	req.spec = pr->spec;
	req.known_version = pr->cache.version;
	st_debug("reservations of %s: PR_GET (%s)", pr->spec, refresh_why(force, now));
	rc = meta_call(STRATA__META__META_MSG_TYPE__META_PR_GET, &req.base, &f, PR_META_MS);
	if (rc)
		goto out;
	rep = strata__meta__pr_get_reply__unpack(NULL, f.hdr.hdr_len, f.msg);
	if (!rep) {
		rc = -EBADMSG;
		goto out;
	}
	if (rep->record)
		rc = state_from_rec(&pr->cache, rep->record, rep->version);
	else if (rep->version != pr->cache.version)
		rc = -EBADMSG; /* a different version must come with its record */
	if (!rc) {
		pr->checked_ms = now;
		pr->loaded_gen = watch_note(rep->seq, rep->instance) ? g_watch.gen : 0;
	} else {
		pr->loaded_gen = 0;
	}
	strata__meta__pr_get_reply__free_unpacked(rep, NULL);
out:
	st_frame_release(&f);
	if (rc && now - g_meta.warned_ms > 5000) {
		g_meta.warned_ms = now;
		st_warn("reservations of %s: meta %s: %s", pr->spec, g_meta.addr, strerror(-rc));
	}
	return rc;
}

/* Load the newest state into st. */
static int pr_load(struct isc_pr *pr, struct pr_state *st)
{
	int rc = pr_refresh(pr, true);

	if (rc)
		return rc;
	*st = pr->cache;
	return 0;
}

/* Store st if nobody changed the state since it was loaded. Returns 0, -EAGAIN (reload and
 * decide again) or another -errno. */
static int pr_commit(struct isc_pr *pr, struct pr_state *st)
{
	Strata__Meta__PrUpdateReq req = STRATA__META__PR_UPDATE_REQ__INIT;
	Strata__Meta__PrRecord rec = STRATA__META__PR_RECORD__INIT;
	Strata__Meta__PrRegistration regv[PR_MAX_REGS], *regp[PR_MAX_REGS];
	Strata__Meta__PrGetReply *rep;
	struct st_frame f;
	int rc;

	if (!g_meta.on) {
		pr->cache = *st;
		return 0;
	}
	rec.generation = st->generation;
	rec.type = st->holder == -1 ? PR_NONE : st->type;
	rec.spc2_holder = st->spc2;
	for (unsigned i = 0; i < st->nregs; i++) {
		strata__meta__pr_registration__init(&regv[i]);
		regv[i].initiator_port = st->regs[i].port;
		regv[i].target_port = st->regs[i].tport;
		regv[i].key = st->regs[i].key;
		regv[i].holder = st->holder == -2 || st->holder == (int)i;
		regp[i] = &regv[i];
	}
	rec.n_regs = st->nregs;
	rec.regs = regp;
	req.spec = pr->spec;
	req.expected_version = st->version;
	req.record = &rec;
	req.gateway = g_watch.gateway; /* meta: we are blocked here, not ignoring our watch */
	rc = meta_call(STRATA__META__META_MSG_TYPE__META_PR_UPDATE, &req.base, &f, PR_UPDATE_MS);
	if (!rc) {
		rep = strata__meta__pr_get_reply__unpack(NULL, f.hdr.hdr_len, f.msg);
		if (rep) {
			st->version = rep->version;
			pr->cache = *st;
			pr->checked_ms = st_now_ms();
			/* The reply carries this update's seq: every other cache is older. */
			pr->loaded_gen = watch_note(rep->seq, rep->instance) ? g_watch.gen : 0;
			strata__meta__pr_get_reply__free_unpacked(rep, NULL);
		} else {
			rc = -EBADMSG;
		}
	}
	st_frame_release(&f);
	if (rc && rc != -EAGAIN)
		st_warn("reservations of %s: update through meta %s: %s", pr->spec, g_meta.addr,
			strerror(-rc));
	return rc;
}

struct isc_pr *isc_pr_create(uint64_t volume_id, const char *spec, const char *target)
{
	struct isc_pr *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return NULL;
	pr->volume_id = volume_id;
	snprintf(pr->spec, sizeof(pr->spec), "%s", spec);
	snprintf(pr->tport, sizeof(pr->tport), "%s,t,0x0001", target);
	state_clear(&pr->cache);
	return pr;
}

void isc_pr_destroy(struct isc_pr *pr)
{
	free(pr);
}

static int reg_find(const struct pr_state *st, const char *port, const char *tport)
{
	for (unsigned i = 0; i < st->nregs; i++)
		if (!strcmp(st->regs[i].port, port) && !strcmp(st->regs[i].tport, tport))
			return (int)i;
	return -1;
}

static bool is_holder(const struct pr_state *st, int reg)
{
	if (st->holder == -1 || reg < 0)
		return false;
	return all_registrants(st->type) || st->holder == reg;
}

static void reg_remove(struct pr_state *st, int i)
{
	if (st->holder == i) {
		st->holder = -1;
		st->type = PR_NONE;
	} else if (st->holder > i) {
		st->holder--;
	}
	st->regs[i] = st->regs[st->nregs - 1];
	if (st->holder == (int)st->nregs - 1)
		st->holder = i;
	st->nregs--;
	if (st->nregs == 0 && st->holder == -2) {
		st->holder = -1;
		st->type = PR_NONE;
	}
}

/* Commands allowed whatever the reservation (SPC-4 table 69, the common subset). */
static bool pr_exempt(uint8_t op)
{
	switch (op) {
	case 0x12: /* INQUIRY */
	case 0xa0: /* REPORT LUNS */
	case 0x03: /* REQUEST SENSE */
	case 0x5e: /* PR IN */
	case 0x5f: /* PR OUT: its service actions decide */
	case 0xa3: /* REPORT SUPPORTED OPCODES */
	case 0x00: /* TEST UNIT READY */
	case 0x25: /* READ CAPACITY */
	case 0x9e: /* READ CAPACITY 16, GET LBA STATUS */
	case 0x1a: /* MODE SENSE */
	case 0x5a:
		return true;
	default:
		return false;
	}
}

/* Allowed even under another nexus's SPC-2 reservation: no need to ask meta at all. */
static bool pr_always_allowed(uint8_t op)
{
	return op == 0x12 || op == 0xa0 || op == 0x03 || op == 0x5e || op == 0x5f;
}

int isc_pr_check(struct isc_pr *pr, const char *port, const struct isc_cdb *c)
{
	const struct pr_state *st = &pr->cache;
	bool reserve_cmd =
		c->opcode == 0x16 || c->opcode == 0x17 || c->opcode == 0x56 || c->opcode == 0x57;
	bool writes = c->writes || c->opcode == 0x35 || c->opcode == 0x91 || c->opcode == 0x15 ||
		      c->opcode == 0x55;
	int me;

	if (reserve_cmd || pr_always_allowed(c->opcode))
		return 0; /* isc_reserve / the PR service actions decide */
	/* Revalidate (see the top of the file); on failure the cached state decides. */
	(void)pr_refresh(pr, false);
	if (st->spc2[0] && strcmp(st->spc2, port))
		return ISC_STATUS_RESERVATION_CONFLICT;
	if (st->holder == -1 || pr_exempt(c->opcode))
		return 0;
	me = reg_find(st, port, pr->tport);
	if (is_holder(st, me))
		return 0;
	switch (st->type) {
	case PR_WE:
		return writes ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	case PR_EA:
		return ISC_STATUS_RESERVATION_CONFLICT;
	case PR_WE_RO:
	case PR_WE_AR:
		return (me < 0 && writes) ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	case PR_EA_RO:
	case PR_EA_AR:
		return me < 0 ? ISC_STATUS_RESERVATION_CONFLICT : 0;
	default:
		return 0;
	}
}

void isc_reserve(struct isc_task *t, bool reserve)
{
	struct isc_pr *pr = isc_task_lu(t)->pr;
	const char *port = isc_session_port(isc_task_session(t));
	struct pr_state st;
	int rc = -EAGAIN;

	for (int i = 0; i < PR_RETRIES && rc == -EAGAIN; i++) {
		if (pr_load(pr, &st)) {
			isc_task_status(t, ISC_STATUS_BUSY);
			return;
		}
		/* SPC-4 5.13.2: RESERVE/RELEASE conflict with persistent reservations. */
		if (st.holder != -1) {
			isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
			return;
		}
		if (reserve) {
			if (st.spc2[0] && strcmp(st.spc2, port)) {
				isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
				return;
			}
			if (!strcmp(st.spc2, port)) {
				rc = 0; /* already ours */
				break;
			}
			snprintf(st.spc2, sizeof(st.spc2), "%s", port);
		} else if (!strcmp(st.spc2, port)) {
			st.spc2[0] = '\0';
		} else {
			rc = 0; /* nothing to release */
			break;
		}
		rc = pr_commit(pr, &st);
	}
	isc_task_status(t, rc ? ISC_STATUS_BUSY : ISC_STATUS_GOOD);
}

/* Drop the SPC-2 reservation if holder matches (NULL: whoever holds it). Best effort. */
static void spc2_drop(struct isc_pr *pr, const char *holder)
{
	struct pr_state st;
	int rc = -EAGAIN;

	for (int i = 0; i < PR_RETRIES && rc == -EAGAIN; i++) {
		if (pr_load(pr, &st) || !st.spc2[0] || (holder && strcmp(st.spc2, holder)))
			return;
		st.spc2[0] = '\0';
		rc = pr_commit(pr, &st);
	}
}

void isc_pr_lun_reset(struct isc_pr *pr)
{
	spc2_drop(pr, NULL);
}

void isc_pr_nexus_gone(struct isc_pr *pr, const char *port)
{
	/* Only when this process's cache says so: no meta round trip per logout otherwise. */
	if (!strcmp(pr->cache.spc2, port))
		spc2_drop(pr, port);
}

/* ---- PERSISTENT RESERVE IN ---- */

static void pr_done(struct isc_task *t, size_t n)
{
	t->in_len = (uint32_t)n < t->c.xfer_len ? (uint32_t)n : t->c.xfer_len;
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

void isc_pr_in(struct isc_task *t)
{
	struct isc_pr *pr = isc_task_lu(t)->pr;
	struct pr_state st;
	uint8_t *d;
	size_t off = 8;

	if (pr_load(pr, &st)) {
		isc_task_status(t, ISC_STATUS_BUSY);
		return;
	}
	if (isc_task_buf(t, 8 + PR_MAX_REGS * (24 + ISC_NAME_MAX + 48))) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	isc_put32(d, st.generation);
	switch (t->c.sa) {
	case 0x00: /* READ KEYS */
		for (unsigned i = 0; i < st.nregs; i++, off += 8)
			isc_put64(d + off, st.regs[i].key);
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	case 0x01: /* READ RESERVATION */
		if (st.holder != -1) {
			uint64_t key = st.holder >= 0 ? st.regs[st.holder].key : 0;
			isc_put64(d + 8, key);
			d[8 + 13] = st.type; /* scope 0: LU */
			off += 16;
		}
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	case 0x02: /* REPORT CAPABILITIES */
		memset(d, 0, 8);
		isc_put16(d, 8);
		d[2] = 0x10; /* CRH: RESERVE/RELEASE compatible reservation handling */
		d[3] = 0x80; /* TMV: the type mask is valid */
		d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
		d[5] = 0x01;
		pr_done(t, 8);
		return;
	case 0x03: /* READ FULL STATUS */
		for (unsigned i = 0; i < st.nregs; i++) {
			uint8_t *p = d + off;
			size_t tl = strlen(st.regs[i].port) + 1;
			tl = (tl + 3) & ~(size_t)3;
			if (tl < 20)
				tl = 20;
			memset(p, 0, 24 + 4 + tl);
			isc_put64(p, st.regs[i].key);
			p[12] = 0x02 | (is_holder(&st, (int)i) ? 0x01 : 0);
			if (is_holder(&st, (int)i))
				p[13] = st.type;
			isc_put16(p + 18, 1); /* relative target port */
			isc_put32(p + 20, (uint32_t)(4 + tl));
			p[24] = 0x45; /* iSCSI, format 01: name with ISID */
			isc_put16(p + 26, (uint16_t)tl);
			memcpy(p + 28, st.regs[i].port, strlen(st.regs[i].port));
			off += 24 + 4 + tl;
		}
		isc_put32(d + 4, (uint32_t)(off - 8));
		pr_done(t, off);
		return;
	default:
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
}

/* ---- PERSISTENT RESERVE OUT ---- */

static bool valid_type(uint8_t type)
{
	return type == PR_WE || type == PR_EA || type == PR_WE_RO || type == PR_EA_RO ||
	       type == PR_WE_AR || type == PR_EA_AR;
}

enum pr_verdict {
	PR_V_COMMIT,   /* st changed: store it */
	PR_V_GOOD,     /* nothing to change */
	PR_V_CONFLICT, /* RESERVATION CONFLICT */
	PR_V_FAILED,   /* the task already failed with sense */
};

struct pr_out_args {
	uint8_t sa, scope, type;
	uint64_t key, sakey;
	const char *port, *tport;
	uint32_t ua; /* unit attention for the other nexuses once committed, 0 for none */
};

/* Decide one PR OUT service action on st (a freshly loaded state). Pure but for failing t. */
static enum pr_verdict pr_out_decide(struct isc_task *t, struct pr_state *st, struct pr_out_args *a)
{
	int me = reg_find(st, a->port, a->tport);

	a->ua = 0;
	switch (a->sa) {
	case 0x00: /* REGISTER */
	case 0x06: /* REGISTER AND IGNORE EXISTING KEY */
		if (me < 0) {
			if (a->sa == 0 && a->key != 0)
				return PR_V_CONFLICT;
			if (a->sakey == 0)
				return PR_V_GOOD; /* nothing to register */
			if (st->nregs == PR_MAX_REGS) {
				isc_task_fail(t, ISC_SENSE_INSUFFICIENT_RES);
				return PR_V_FAILED;
			}
			snprintf(st->regs[st->nregs].port, PR_PORT_MAX, "%s", a->port);
			snprintf(st->regs[st->nregs].tport, PR_PORT_MAX, "%s", a->tport);
			st->regs[st->nregs].key = a->sakey;
			st->nregs++;
		} else {
			if (a->sa == 0 && a->key != st->regs[me].key)
				return PR_V_CONFLICT;
			if (a->sakey == 0) {
				bool released = st->holder == me && !all_registrants(st->type) &&
						(st->type == PR_WE_RO || st->type == PR_EA_RO);
				reg_remove(st, me);
				if (released)
					a->ua = ISC_SENSE_RESERVATIONS_RELEASED;
			} else {
				st->regs[me].key = a->sakey;
			}
		}
		st->generation++;
		return PR_V_COMMIT;
	case 0x01: /* RESERVE */
		if (me < 0 || a->key != st->regs[me].key)
			return PR_V_CONFLICT;
		if (a->scope != 0 || !valid_type(a->type)) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return PR_V_FAILED;
		}
		if (st->holder != -1) {
			if (is_holder(st, me) && st->type == a->type)
				return PR_V_GOOD;
			return PR_V_CONFLICT;
		}
		st->type = a->type;
		st->holder = all_registrants(a->type) ? -2 : me;
		return PR_V_COMMIT;
	case 0x02: /* RELEASE */
		if (me < 0 || a->key != st->regs[me].key)
			return PR_V_CONFLICT;
		if (st->holder == -1 || !is_holder(st, me))
			return PR_V_GOOD;
		if (a->scope != 0 || a->type != st->type) {
			isc_task_fail(t, ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x26, 0x04));
			return PR_V_FAILED;
		}
		if (st->type != PR_WE && st->type != PR_EA)
			a->ua = ISC_SENSE_RESERVATIONS_RELEASED;
		st->holder = -1;
		st->type = PR_NONE;
		return PR_V_COMMIT;
	case 0x03: /* CLEAR */
		if (me < 0 || a->key != st->regs[me].key)
			return PR_V_CONFLICT;
		a->ua = ISC_SENSE_RESERVATIONS_PREEMPTED;
		st->nregs = 0;
		st->holder = -1;
		st->type = PR_NONE;
		st->generation++;
		return PR_V_COMMIT;
	case 0x04: /* PREEMPT */
	case 0x05: /* PREEMPT AND ABORT */
		if (me < 0 || a->key != st->regs[me].key)
			return PR_V_CONFLICT;
		if (a->sakey == 0 && !(st->holder == -2)) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
			return PR_V_FAILED;
		}
		if (st->holder != -1 && (a->scope != 0 || !valid_type(a->type))) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return PR_V_FAILED;
		}
		{
			bool take = st->holder == -2 ||
				    (st->holder >= 0 && st->regs[st->holder].key == a->sakey);
			bool removed = false;
			for (int i = (int)st->nregs - 1; i >= 0; i--) {
				if (!strcmp(st->regs[i].port, a->port) &&
				    !strcmp(st->regs[i].tport, a->tport))
					continue; /* never preempt ourselves */
				if ((st->holder == -2 && a->sakey == 0) ||
				    st->regs[i].key == a->sakey) {
					reg_remove(st, i);
					removed = true;
				}
			}
			if (!removed && !take && st->holder == -1 && a->sakey != 0) {
				/* no registrant with that key: conflict per SPC-4 5.13.11.2.4 */
				return PR_V_CONFLICT;
			}
			me = reg_find(st, a->port, a->tport);
			if (take) {
				st->type = a->type;
				st->holder = all_registrants(a->type) ? -2 : me;
			}
			if (removed)
				a->ua = ISC_SENSE_REGISTRATIONS_PREEMPTED;
		}
		st->generation++;
		return PR_V_COMMIT;
	default:
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return PR_V_FAILED;
	}
}

void isc_pr_out(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	struct isc_pr *pr = lu->pr;
	const uint8_t *p = t->buf;
	struct pr_out_args a = {
		.sa = t->c.sa,
		.scope = t->cdb[2] >> 4,
		.type = t->cdb[2] & 0x0f,
		.port = isc_session_port(isc_task_session(t)),
		.tport = pr->tport,
	};
	struct pr_state st;
	enum pr_verdict v = PR_V_COMMIT;
	int rc = -EAGAIN;

	if (t->c.xfer_len != 24) {
		isc_task_fail(t, ISC_SENSE_PARAM_LIST_LENGTH);
		return;
	}
	a.key = isc_get64(p);
	a.sakey = isc_get64(p + 8);
	if (p[20] & 0x08) { /* SPEC_I_PT: not supported */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
		return;
	}
	if (a.sa == 7) { /* REGISTER AND MOVE */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	/* Load, decide, compare-and-swap; another gateway's change in between means decide
	 * again on the newer state. */
	for (int i = 0; i < PR_RETRIES && rc == -EAGAIN; i++) {
		if (pr_load(pr, &st)) {
			isc_task_status(t, ISC_STATUS_BUSY);
			return;
		}
		v = pr_out_decide(t, &st, &a);
		if (v != PR_V_COMMIT)
			break;
		rc = pr_commit(pr, &st);
	}
	switch (v) {
	case PR_V_FAILED:
		return;
	case PR_V_CONFLICT:
		isc_task_status(t, ISC_STATUS_RESERVATION_CONFLICT);
		return;
	case PR_V_GOOD:
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	case PR_V_COMMIT:
		if (rc) {
			isc_task_status(t, ISC_STATUS_BUSY);
			return;
		}
		/* Unit attentions reach this process's other sessions only (not other gateways').
		 */
		if (a.ua)
			isc_lu_unit_attention(lu, isc_task_session(t), a.ua);
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
}
