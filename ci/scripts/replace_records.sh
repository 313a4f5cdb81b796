# Sourced by the leaderboard scripts (rerun_quick_leaderboards.sh, run_large_leaderboards.sh).
# replace_records OUT: for every task that has records under OUT/<lane>/<task>/records, replace
# leaderboards/<task>/records with the union of the lanes' records; other tasks' records stay.
replace_records() {
  local out=$1 d task
  local -A seen=()
  for d in "$out"/*/*/records; do
    [[ -d "$d" ]] || continue
    task=$(basename "$(dirname "$d")")
    if [[ -z "${seen[$task]:-}" ]]; then
      rm -rf "leaderboards/$task/records"
      seen[$task]=1
    fi
    mkdir -p "leaderboards/$task/records"
    cp -r "$d"/. "leaderboards/$task/records/"
  done
}
