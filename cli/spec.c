/* "pool/vol@snap" parsing, following rbd's convention, and the meta address. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

bool cli_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > CLI_NAME_MAX) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			return false;
		}
	}
	return true;
}

static int part(const char *what, const char *s, size_t n, char *dst, char *why, size_t whylen)
{
	if (n > CLI_NAME_MAX) {
		snprintf(why, whylen, "%s name longer than %d characters", what, CLI_NAME_MAX);
		return -EINVAL;
	}
	memcpy(dst, s, n);
	dst[n] = '\0';
	if (!cli_name_valid(dst)) {
		snprintf(why, whylen,
			 "invalid %s name '%s' (allowed: [A-Za-z0-9._-], 1 to 128 characters)",
			 what, dst);
		return -EINVAL;
	}
	return 0;
}

int cli_parse_spec(const char *s, enum cli_snap_rule rule, struct cli_spec *out, char *why,
		   size_t whylen)
{
	memset(out, 0, sizeof(*out));
	const char *slash = strchr(s, '/');
	const char *at = strchr(s, '@');
	const char *want = rule == CLI_SNAP_REQUIRED   ? "POOL/VOL@SNAP"
			   : rule == CLI_SNAP_OPTIONAL ? "POOL/VOL[@SNAP]"
						       : "POOL/VOL";
	if (slash == NULL || (at != NULL && at < slash) || strchr(slash + 1, '/') != NULL ||
	    (at != NULL && strchr(at + 1, '@') != NULL)) {
		snprintf(why, whylen, "invalid spec '%s' (want %s)", s, want);
		return -EINVAL;
	}
	if (at == NULL && rule == CLI_SNAP_REQUIRED) {
		snprintf(why, whylen, "'%s' names no snapshot (want %s)", s, want);
		return -EINVAL;
	}
	if (at != NULL && rule == CLI_SNAP_NONE) {
		snprintf(why, whylen, "'%s' names a snapshot; this command takes %s", s, want);
		return -EINVAL;
	}
	const char *vend = at ? at : s + strlen(s);
	int rc = part("pool", s, (size_t)(slash - s), out->pool, why, whylen);
	if (rc == 0) {
		rc = part("volume", slash + 1, (size_t)(vend - slash - 1), out->vol, why, whylen);
	}
	if (rc == 0 && at != NULL) {
		rc = part("snapshot", at + 1, strlen(at + 1), out->snap, why, whylen);
	}
	return rc;
}

const char *cli_meta_addr(const char *flag)
{
	if (flag != NULL && flag[0] != '\0') {
		return flag;
	}
	const char *env = getenv("STRATA_META");
	if (env != NULL && env[0] != '\0') {
		return env;
	}
	return "127.0.0.1:7700";
}
