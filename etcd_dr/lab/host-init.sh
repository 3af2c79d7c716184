#!/bin/bash
# PID 1 of one etcd-dr lab host. etcd_dr/lab/hosts.py starts it as
#   ip netns exec NS unshare --pid --fork --kill-child --mount-proc --mount --uts --propagation private \
#     setpriv --bounding-set -sys_time,-sys_boot,-sys_module bash host-init.sh HOST_DIR
# and reads HOST_DIR/host.env (written by hosts.py). It gives the host: its hostname, copy-on-write
# /etc /var /opt /root /usr /home /srv (upper dirs under HOST_DIR/ovl: they survive power loss), a fresh
# tmpfs /run (wiped by power loss, like a real host), cgroups, sshd on its address, a dockerd on a real
# /var/lib/docker, and the etcd-dr units enabled in /etc/etcd-dr/units (what systemd would start at boot).
# SIGTERM = graceful shutdown; SIGKILL of this process = power loss (the kernel kills the whole PID ns).
set -euo pipefail
hd=$1
. "$hd/host.env"   # HOST IP LAB_DIR DOCKER CGROUP_PARENT
hostname "$HOST"
for d in etc var opt root usr home srv; do
  mkdir -p "$hd/ovl/$d/upper" "$hd/ovl/$d/work"
  mount -t overlay "ovl-$HOST-$d" -o "lowerdir=/$d,upperdir=$hd/ovl/$d/upper,workdir=$hd/ovl/$d/work" "/$d"
done
mount -t tmpfs -o mode=755 "run-$HOST" /run
mkdir -p /run/sshd
# 'ip netns exec' mounted a fresh /sys, which hides /sys/fs/cgroup: replay the root namespace's cgroup mounts
if [ -s "$LAB_DIR/cgroup-mounts" ] && ! mountpoint -q /sys/fs/cgroup; then
  while read -r tgt fs opts; do
    case $fs in tmpfs) mount -t tmpfs -o mode=755 cgroup "$tgt" ;;
                *) mkdir -p "$tgt"; mount -t "$fs" -o "$opts" "$fs" "$tgt" ;; esac
  done < "$LAB_DIR/cgroup-mounts"
fi
# a plain root account like a fresh server (a heavy root .bashrc costs ~250 ms per ssh exec)
[ -e "$hd/ovl/root/upper/.bashrc" ] || cp /etc/skel/.bashrc /etc/skel/.profile /root/
echo "$HOST" > /etc/hostname
{ grep -v '# etcd-dr-lab$' /etc/hosts || true; cat "$LAB_DIR/hosts.txt"; } > /etc/hosts.new && mv /etc/hosts.new /etc/hosts
/usr/sbin/sshd -f "$hd/sshd_config" -E "$hd/sshd.log"
for _ in $(seq 100); do [ -s /run/sshd.pid ] && break; sleep 0.02; done
[ -s /run/sshd.pid ] || { echo "sshd did not start: $(tail -2 "$hd/sshd.log")" >&2; exit 1; }
if [ "$DOCKER" = 1 ]; then
  # overlay2 cannot sit on overlayfs: /var/lib/docker is a real directory that survives power loss
  mkdir -p "$hd/docker-data" /var/lib/docker && mount --bind "$hd/docker-data" /var/lib/docker
  setsid /usr/sbin/dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=overlay2 \
    --cgroup-parent="/$CGROUP_PARENT" >"$hd/dockerd.log" 2>&1 </dev/null &
fi
# etcd-dr units (etcd_dr.runtime.ProcessRuntime): NAME.sh execs the program, NAME.enabled = start at boot
if [ -d /etc/etcd-dr/units ]; then
  mkdir -p /run/etcd-dr /var/log/etcd-dr
  for e in /etc/etcd-dr/units/*.enabled; do
    [ -e "$e" ] || continue
    n=$(basename "$e" .enabled); [ -f "/etc/etcd-dr/units/$n.sh" ] || continue
    setsid nohup /bin/sh "/etc/etcd-dr/units/$n.sh" </dev/null >>"/var/log/etcd-dr/$n.log" 2>&1 &
    echo $! > "/run/etcd-dr/$n.pid"
  done
fi
echo "booted $HOST"
trap 'kill -TERM -1 2>/dev/null; sleep 1; exit 0' TERM INT
while :; do sleep 3600 & wait $! || true; done
