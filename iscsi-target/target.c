/*
 * Targets and logical units. Each volume "pool/vol" is target "<prefix>:pool.vol", LUN 0;
 * a snapshot "pool/vol@snap" is "<prefix>:pool.vol.snap", read-only. Logical units are shared
 * by every session of this process that logs in to the same target (refcounted), so SPC-2
 * reservations, persistent reservations and unit attentions are per volume, not per session.
 *
 * Lookups call libstrata's synchronous catalog API (strata_list_volumes, strata_open) on the
 * reactor thread. That happens only at login and discovery, never per I/O.
 *
 * Config file (optional), one directive per line, '#' comments:
 *   discovery-auth USER SECRET [MUTUAL_USER MUTUAL_SECRET]
 *   auth USER SECRET [MUTUAL_USER MUTUAL_SECRET]      default for every target
 *   target IQN                                         starts a per-target block:
 *     auth USER SECRET [MUTUAL_USER MUTUAL_SECRET]
 *     allow INITIATOR_IQN                              ACL; none listed = everyone
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

static struct isc_config *g_cfg;
static strata_cluster *g_cluster;
static TAILQ_HEAD(, isc_lu) g_lus = TAILQ_HEAD_INITIALIZER(g_lus);

int isc_spec_to_iqn(const char *prefix, const char *spec, char *out, size_t len)
{
	char buf[ISC_NAME_MAX];
	int n;

	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf; *p; p++) {
		if (*p == '/' || *p == '@')
			*p = '.';
		else if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a'); /* IQNs are lowercase (RFC 3722) */
		else if (*p == '_')
			*p = '-';
	}
	n = snprintf(out, len, "%s:%s", prefix, buf);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void set_auth(struct isc_auth *a, char **w, int nw)
{
	memset(a, 0, sizeof(*a));
	if (nw >= 3) {
		snprintf(a->user, sizeof(a->user), "%s", w[1]);
		snprintf(a->secret, sizeof(a->secret), "%s", w[2]);
	}
	if (nw >= 5) {
		snprintf(a->mutual_user, sizeof(a->mutual_user), "%s", w[3]);
		snprintf(a->mutual_secret, sizeof(a->mutual_secret), "%s", w[4]);
	}
}

int isc_config_load(struct isc_config *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int lineno = 0, rc = 0;
	struct isc_target_conf *cur = NULL;

	if (!f) {
		rc = -errno;
		st_error("config %s: %s", path, strerror(errno));
		return rc;
	}
	while (fgets(line, sizeof(line), f)) {
		char *w[8], *save = NULL, *tok;
		int nw = 0;

		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		for (tok = strtok_r(line, " \t\r\n", &save); tok && nw < 8;
		     tok = strtok_r(NULL, " \t\r\n", &save))
			w[nw++] = tok;
		if (nw == 0)
			continue;
		if (!strcmp(w[0], "discovery-auth") && (nw == 3 || nw == 5)) {
			set_auth(&cfg->discovery_auth, w, nw);
		} else if (!strcmp(w[0], "auth") && (nw == 3 || nw == 5)) {
			set_auth(cur ? &cur->auth : &cfg->default_auth, w, nw);
		} else if (!strcmp(w[0], "target") && nw == 2) {
			struct isc_target_conf *t =
				realloc(cfg->targets, (cfg->ntargets + 1) * sizeof(*t));
			if (!t) {
				rc = -ENOMEM;
				break;
			}
			cfg->targets = t;
			cur = &t[cfg->ntargets++];
			memset(cur, 0, sizeof(*cur));
			cur->auth = cfg->default_auth;
			snprintf(cur->iqn, sizeof(cur->iqn), "%s", w[1]);
		} else if (!strcmp(w[0], "allow") && nw == 2 && cur) {
			char(*a)[ISC_NAME_MAX] = realloc(cur->acl, (cur->nacl + 1) * sizeof(*a));
			if (!a) {
				rc = -ENOMEM;
				break;
			}
			cur->acl = a;
			snprintf(a[cur->nacl++], ISC_NAME_MAX, "%s", w[1]);
		} else {
			st_error("config %s:%d: cannot parse '%s'", path, lineno, w[0]);
			rc = -EINVAL;
			break;
		}
	}
	fclose(f);
	return rc;
}

static const struct isc_target_conf *target_conf(const char *iqn)
{
	for (size_t i = 0; g_cfg && i < g_cfg->ntargets; i++)
		if (!strcmp(g_cfg->targets[i].iqn, iqn))
			return &g_cfg->targets[i];
	return NULL;
}

static bool acl_allows(const char *iqn, const char *initiator)
{
	const struct isc_target_conf *t = target_conf(iqn);

	if (!t || t->nacl == 0)
		return true;
	for (size_t i = 0; i < t->nacl; i++)
		if (!strcmp(t->acl[i], initiator))
			return true;
	return false;
}

int isc_target_init(struct isc_config *cfg, strata_cluster *cl)
{
	g_cfg = cfg;
	g_cluster = cl;
	return 0;
}

/* Find the volume spec behind a target name. Returns 0 or -ENOENT. */
static int resolve(const char *iqn, char *spec, size_t len)
{
	char **vols = NULL;
	size_t n = 0;
	int rc = strata_list_volumes(g_cluster, &vols, &n);

	if (rc)
		return rc;
	rc = -ENOENT;
	for (size_t i = 0; i < n && rc; i++) {
		char name[ISC_NAME_MAX];
		size_t nl;
		if (isc_spec_to_iqn(g_cfg->iqn_prefix, vols[i], name, sizeof(name)))
			continue;
		nl = strlen(name);
		if (!strcmp(name, iqn)) {
			snprintf(spec, len, "%s", vols[i]);
			rc = 0;
		} else if (!strchr(vols[i], '@') && !strncmp(name, iqn, nl) && iqn[nl] == '.' &&
			   iqn[nl + 1]) {
			/* <volume target>.<snap>: a snapshot or template, read-only */
			snprintf(spec, len, "%s@%s", vols[i], iqn + nl + 1);
			rc = 0;
		}
	}
	strata_free_list(vols, n);
	return rc;
}

static void lu_geometry(struct isc_lu *lu)
{
	struct isc_geom *g = &lu->geom;

	g->block_size = g_cfg->block_size ? g_cfg->block_size : 512;
	g->nblocks = strata_size(lu->vol) / g->block_size;
	g->read_only = strata_read_only(lu->vol);
	g->max_xfer_blocks = (32u << 20) / g->block_size; /* 32 MiB per command */
	g->max_unmap_blocks = (256u << 20) / g->block_size;
	g->max_ws_blocks = g->max_xfer_blocks; /* initiators check WRITE SAME by writing it */
	g->max_caw_blocks = 1;
}

static void lu_resized(void *arg, uint64_t size)
{
	(void)arg;
	(void)size;
	/* The next READ CAPACITY sees strata_size(); UA is raised from session.c. */
}

int isc_lu_get(const char *iqn, struct isc_lu **out)
{
	struct isc_lu *lu;
	char spec[ISC_NAME_MAX];
	int rc;

	TAILQ_FOREACH(lu, &g_lus, link)
	{
		if (!strcmp(lu->iqn, iqn)) {
			lu->refs++;
			*out = lu;
			return 0;
		}
	}
	rc = resolve(iqn, spec, sizeof(spec));
	if (rc)
		return rc;
	lu = calloc(1, sizeof(*lu));
	if (!lu)
		return -ENOMEM;
	snprintf(lu->spec, sizeof(lu->spec), "%s", spec);
	snprintf(lu->iqn, sizeof(lu->iqn), "%s", iqn);
	rc = strata_open(g_cluster, spec, strchr(spec, '@') ? STRATA_OPEN_RDONLY : 0, &lu->vol);
	if (rc) {
		st_warn("open %s: %s", spec, strerror(-rc));
		free(lu);
		return rc;
	}
	lu->volume_id = strata_volume_id(lu->vol);
	lu_geometry(lu);
	strata_on_resize(lu->vol, lu_resized, lu);
	lu->pr = isc_pr_create(lu->volume_id, lu->spec, lu->iqn);
	if (!lu->pr) {
		strata_close(lu->vol);
		free(lu);
		return -ENOMEM;
	}
	lu->refs = 1;
	TAILQ_INSERT_TAIL(&g_lus, lu, link);
	st_info("opened %s as %s (%llu blocks of %u)", spec, iqn,
		(unsigned long long)lu->geom.nblocks, lu->geom.block_size);
	*out = lu;
	return 0;
}

void isc_lu_put(struct isc_lu *lu)
{
	if (!lu || --lu->refs > 0)
		return;
	TAILQ_REMOVE(&g_lus, lu, link);
	isc_pr_destroy(lu->pr);
	strata_close(lu->vol);
	free(lu);
}

int isc_send_targets(const char *what, const char *current_target, const char *portal,
		     const char *initiator, struct isc_text *out)
{
	char **vols = NULL;
	size_t n = 0;
	int rc;

	if (!strcmp(what, "") && current_target) {
		isc_text_addf(out, "TargetName", "%s", current_target);
		return isc_text_addf(out, "TargetAddress", "%s,%d", portal,
				     ISC_DEFAULT_PORTAL_GROUP);
	}
	rc = strata_list_volumes(g_cluster, &vols, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		char name[ISC_NAME_MAX];
		if (isc_spec_to_iqn(g_cfg->iqn_prefix, vols[i], name, sizeof(name)))
			continue;
		if (strcmp(what, "All") && strcmp(what, name))
			continue;
		if (!acl_allows(name, initiator))
			continue;
		isc_text_addf(out, "TargetName", "%s", name);
		isc_text_addf(out, "TargetAddress", "%s,%d", portal, ISC_DEFAULT_PORTAL_GROUP);
	}
	strata_free_list(vols, n);
	return 0;
}

static int login_target_check(void *arg, const char *target, const char *initiator)
{
	char spec[ISC_NAME_MAX];
	int rc;

	(void)arg;
	if (!acl_allows(target, initiator))
		return -EACCES;
	for (struct isc_lu *lu = TAILQ_FIRST(&g_lus); lu; lu = TAILQ_NEXT(lu, link))
		if (!strcmp(lu->iqn, target))
			return 0;
	rc = resolve(target, spec, sizeof(spec));
	return rc ? -ENOENT : 0;
}

static int login_target_auth(void *arg, const char *target, struct isc_auth *auth)
{
	const struct isc_target_conf *t;

	(void)arg;
	if (!g_cfg)
		return 0;
	if (!target) {
		*auth = g_cfg->discovery_auth;
		return 0;
	}
	t = target_conf(target);
	*auth = t ? t->auth : g_cfg->default_auth;
	return 0;
}

const struct isc_login_ops isc_target_login_ops = {
	.target_check = login_target_check,
	.target_auth = login_target_auth,
};
