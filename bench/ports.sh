# Sourced by the benchmarks that start TCP servers on loopback.

# Waits until 127.0.0.1:PORT accepts a connection, for up to SECONDS (default 10).
wait_port() { # port [seconds]
  for _ in $(seq $((${2:-10} * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}
