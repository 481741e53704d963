#!/usr/bin/env bash
# Keeps docs/metrics.md and the code in step: every metric name the code registers is documented
# there, and every documented name still exists in the code. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

code=$(grep -rhoE '"moodle_edge_[a-z0-9_]+"' src | tr -d '"' | sort -u)
docs=$(grep -oE 'moodle_edge_[a-z0-9_]+' docs/metrics.md | sort -u)
missing=$(comm -23 <(echo "$code") <(echo "$docs"))
stale=$(comm -13 <(echo "$code") <(echo "$docs"))
rc=0
if [[ -n "$missing" ]]; then
    echo "check-docs: metrics registered in src/ but not in docs/metrics.md:" >&2
    echo "$missing" | sed 's/^/  /' >&2
    rc=1
fi
if [[ -n "$stale" ]]; then
    echo "check-docs: metrics in docs/metrics.md that src/ no longer registers:" >&2
    echo "$stale" | sed 's/^/  /' >&2
    rc=1
fi
[[ $rc -eq 0 ]] && echo "check-docs: $(echo "$code" | wc -l) metrics, all documented"
exit $rc
