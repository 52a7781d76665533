#!/usr/bin/env bash
# Start Dramatiq workers: `./run_workers.sh` for both channels, `./run_workers.sh push` or
# `./run_workers.sh email` for one; `webhooks` sends the status webhooks' events (started by default
# when STATUS_WEBHOOK_URL is set). Each channel's
# worker also runs a scheduler for that channel, the webhooks worker the pass publishing due events.
# Processes and threads come from WORKER_PROCESSES / WORKER_THREADS; SIGTERM finishes the work in
# flight and stops. A worker that exits abnormally (the broker or the database unreachable at
# start-up, a crashed process) is restarted with backoff. Each channel's workers serve their
# Prometheus metrics on PUSH_METRICS_PORT / EMAIL_METRICS_PORT unless METRICS_ENABLED=false.
# Logs go to stdout.
set -u
cd "$(dirname "$0")"

channels=("$@")
for channel in "${channels[@]}"; do
  case "$channel" in
    push | email | webhooks) ;;
    *) echo "usage: $0 [push] [email] [webhooks]" >&2; exit 2 ;;
  esac
done

# Consumers look at delayed messages every 100 ms (Dramatiq's default is 1 s), so a notification
# leaves within about 0.1 s of its due time.
export dramatiq_worker_timeout=100
# Validate the configuration once, with a message naming a bad variable.
# settings.py is the one reader of the environment; it also fails with the bad variable's name.
config=$(python -c "import settings as s
print(s.WORKER_PROCESSES, s.WORKER_THREADS, s.PUSH_METRICS_PORT, s.EMAIL_METRICS_PORT, s.WEBHOOKS_METRICS_PORT,
      int(bool(s.STATUS_WEBHOOK_URL)))") || exit 2
read -r processes threads push_port email_port webhooks_port status_webhooks <<<"$config"
# By default every channel, and the status webhooks when they are configured.
if [ ${#channels[@]} -eq 0 ]; then
  channels=(push email)
  [ "$status_webhooks" = 1 ] && channels+=(webhooks)
fi

USER_ID=$(id -u)
stopping=0
pids=()

metrics_port() {
  case "$1" in push) echo "$push_port" ;; email) echo "$email_port" ;; *) echo "$webhooks_port" ;; esac
}

supervise() {
  local channel=$1 delay=1 child code started
  # Each channel's processes share one multiprocess directory, emptied at start so that the
  # counters of processes from an earlier run are not summed in.
  local metrics_dir="${TMPDIR:-/tmp}/notification-metrics-$USER_ID-$channel"
  trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
  while :; do
    started=$SECONDS
    rm -rf "$metrics_dir" && mkdir -p "$metrics_dir"
    dramatiq_prom_db="$metrics_dir" dramatiq_prom_port=$(metrics_port "$channel") dramatiq actors.worker \
      --queues "$channel" \
      --processes "$processes" \
      --threads "$threads" 2>&1 &
    child=$!
    wait "$child"
    code=$?
    [ "$code" -eq 0 ] && exit 0
    # A worker that ran a while before failing starts the backoff afresh.
    [ $((SECONDS - started)) -gt 60 ] && delay=1
    echo "run_workers: $channel worker exited with $code; restarting in ${delay}s" >&2
    sleep "$delay" & wait $!
    delay=$((delay < 30 ? delay * 2 : 30))
  done
}

for channel in "${channels[@]}"; do
  supervise "$channel" &
  pids+=($!)
done

shutdown() {
  stopping=1
  kill -TERM "${pids[@]}" 2>/dev/null
}
trap shutdown TERM INT

# Stop everything as soon as one channel's worker stops for good.
status=0
while [ ${#pids[@]} -gt 0 ]; do
  wait -n "${pids[@]}"
  code=$?
  alive=()
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
  pids=("${alive[@]}")
  if [ "$stopping" -eq 0 ] && [ ${#pids[@]} -gt 0 ]; then
    status=$code
    shutdown
  fi
done
exit "$status"
