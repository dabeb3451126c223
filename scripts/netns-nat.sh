#!/usr/bin/env bash
# Real Linux NATs for the NAT-traversal test (__test__/nat.spec.ts, docs/nat.md).
#
#   netns-nat.sh up   PREFIX MODE_A MODE_B    MODE: cone (MASQUERADE: port-restricted cone)
#                                                   symmetric (MASQUERADE --random-fully)
#   netns-nat.sh down PREFIX
#
# Creates 6 namespaces named PREFIX-*: "pub" (a bridge: the public segment 10.77.0.0/24), "rv"
# (the rendezvous/relay host, 10.77.0.10), "ra"/"rb" (NAT routers, public 10.77.0.2/.3, private
# 192.168.1.1 / 192.168.2.1), "ha"/"hb" (private hosts 192.168.1.2 / 192.168.2.2). Every interface
# is created inside the namespaces (veth pairs are born there), so nothing touches the root
# namespace and only these addresses are used. Routers drop unsolicited inbound UDP to themselves,
# as home routers do (this also keeps conntrack from recording those packets). `up` is idempotent
# (it tears PREFIX down first) and cleans up after itself when it fails; `down` is idempotent.
set -euo pipefail

cmd=${1:-}
P=${2:-}
if [[ -z "$cmd" || -z "$P" || ! "$P" =~ ^[a-z0-9]{1,10}$ ]]; then
  echo "usage: $0 up PREFIX cone|symmetric cone|symmetric | $0 down PREFIX   (PREFIX: 1-10 of [a-z0-9])" >&2
  exit 2
fi
NSS=(pub rv ra rb ha hb)
IPT=${IPTABLES:-iptables}

down() {
  local n
  for n in "${NSS[@]}"; do
    if ip netns list | grep -qw -- "$P-$n"; then
      # Kill anything still running in the namespace, then remove it (its interfaces go with it).
      ip netns pids "$P-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$P-$n" 2>/dev/null || true
    fi
  done
}

nat_rule() { # ns pub_if mode
  case "$3" in
    cone) ip netns exec "$1" "$IPT" -t nat -A POSTROUTING -o "$2" -j MASQUERADE ;;
    symmetric) ip netns exec "$1" "$IPT" -t nat -A POSTROUTING -o "$2" -j MASQUERADE --random-fully ;;
    *) echo "unknown NAT mode '$3' (cone|symmetric)" >&2; return 2 ;;
  esac
}

up() {
  local ma=$1 mb=$2 n
  down
  trap 'echo "netns-nat: setup failed, cleaning up $P" >&2; down' ERR
  for n in "${NSS[@]}"; do
    ip netns add "$P-$n"
    ip -n "$P-$n" link set lo up
  done
  ip -n "$P-pub" link add br0 type bridge
  ip -n "$P-pub" link set br0 up
  # Public side: rv, ra, rb each get a veth into the bridge.
  local i=0 who addr
  for who in rv ra rb; do
    case $who in rv) addr=10.77.0.10 ;; ra) addr=10.77.0.2 ;; rb) addr=10.77.0.3 ;; esac
    ip -n "$P-pub" link add "p$i" type veth peer name pub0 netns "$P-$who"
    ip -n "$P-pub" link set "p$i" master br0 up
    ip -n "$P-$who" addr add "$addr/24" dev pub0
    ip -n "$P-$who" link set pub0 up
    i=$((i + 1))
  done
  # Private sides: router <-> host.
  local r h net mode
  for r in ra rb; do
    if [[ $r == ra ]]; then h=ha; net=1; mode=$ma; else h=hb; net=2; mode=$mb; fi
    ip -n "$P-$r" link add lan0 type veth peer name eth0 netns "$P-$h"
    ip -n "$P-$r" addr add "192.168.$net.1/24" dev lan0
    ip -n "$P-$r" link set lan0 up
    ip -n "$P-$h" addr add "192.168.$net.2/24" dev eth0
    ip -n "$P-$h" link set eth0 up
    ip -n "$P-$h" route add default via "192.168.$net.1"
    ip netns exec "$P-$r" sysctl -qw net.ipv4.ip_forward=1
    nat_rule "$P-$r" pub0 "$mode"
    ip netns exec "$P-$r" "$IPT" -A INPUT -i pub0 -p udp -j DROP
  done
  trap - ERR
  echo "netns-nat: $P up (A: $ma, B: $mb)"
}

case "$cmd" in
  up) up "${3:?mode of NAT A}" "${4:?mode of NAT B}" ;;
  down) down; echo "netns-nat: $P down" ;;
  *) echo "unknown command '$cmd'" >&2; exit 2 ;;
esac
