#!/usr/bin/env bash
# A replica that runs out of space while its primary has room (dist_full.sh, FULL=replica).
export FULL=replica
# shellcheck source=tests/integration/dist_full.sh
. "$(dirname "$0")/dist_full.sh"
