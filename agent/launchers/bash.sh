# The shell side of an execution (sandbox-agent runs it with bash -c): the
# same protocol as python.py. Cells are sourced by the same shell, so
# variables, functions and the working directory persist. SIGUSR1 (the
# timeout) returns from the cell; not SIGINT, whose special handling while
# bash waits for a foreground child leaves later traps undelivered.
printf 'r\n' >&4
# Variables handed over with the code (proxy settings), set before it runs;
# an empty value unsets one.
__sandbox_env() {
  local kv
  while IFS= read -r -d '' kv; do
    if [[ $kv == *= ]]; then unset "${kv%=}"; else export "$kv"; fi
  done </run/sandbox/env
}
read -r -N 1 -u 3 __sandbox_mode
if [[ $__sandbox_mode != s ]]; then
  exec 3<&- 4>&-
  [[ $__sandbox_mode == e ]] && __sandbox_env
  unset __sandbox_mode; unset -f __sandbox_env
  source /run/sandbox/main.sh; exit
fi
unset __sandbox_mode
trap 'return 130 2>/dev/null' USR1
printf 's\n' >&4
while IFS= read -r -u 3 __sandbox_cell; do
  [[ $__sandbox_cell == env ]] && __sandbox_env
  source /run/sandbox/cell.sh
  printf '%d\n' "$?" >&4
done
exit 0
