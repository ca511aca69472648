#!/bin/busybox sh
# The guest's /init (busybox sh): loads the virtio-net modules, configures eth0 from
# the kernel command line, runs /test.sh with the helpers of /lib/netpath.sh, prints
# "NETPATH-DONE rc=N" and powers off.
#
# Command line: netpath.ip=A.B.C.D/N netpath.gw=A.B.C.D netpath.mac=MAC, and for a
# dual-stack guest netpath.ip6=ADDR/128 netpath.gw6=ADDR (without them IPv6 is off).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
. /lib/netpath.sh

fail_boot() {
    echo "NETPATH-RESULT guest-net fail $*"
    echo "NETPATH-DONE rc=boot-failed"
    poweroff -f
    sleep 10
}

for m in /modules/*.ko; do
    [ -e "$m" ] || continue
    insmod "$m" || fail_boot "insmod $m"
done

IP= GW= MAC= IP6= GW6=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        netpath.ip=*) IP=${arg#netpath.ip=} ;;
        netpath.gw=*) GW=${arg#netpath.gw=} ;;
        netpath.mac=*) MAC=${arg#netpath.mac=} ;;
        netpath.ip6=*) IP6=${arg#netpath.ip6=} ;;
        netpath.gw6=*) GW6=${arg#netpath.gw6=} ;;
    esac
done
export IP GW MAC IP6 GW6

i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail_boot "no eth0 after 10 s"
    sleep 0.1
done
if [ -n "$IP6" ]; then
    # The address is unique by lease (no duplicate address detection), and the guest
    # takes no router advertisements (it sends no solicitations either): its route is
    # the one below. Its link-local address is formed from its MAC (addr_gen_mode 0),
    # the one netpath's guard accepts.
    for c in all default eth0; do
        sysctl -qw net.ipv6.conf.$c.accept_dad=0
        sysctl -qw net.ipv6.conf.$c.accept_ra=0
    done
else
    # An IPv4-only guest: no ICMPv6 noise.
    for c in all default eth0; do
        sysctl -qw net.ipv6.conf.$c.disable_ipv6=1
    done
fi
ip link set lo up
HWADDR=$(cat /sys/class/net/eth0/address)
if [ -n "$MAC" ] && [ "$HWADDR" != "$MAC" ]; then
    fail_boot "eth0 has MAC $HWADDR, expected $MAC"
fi
if [ -n "$IP" ]; then
    ip addr add "$IP" dev eth0 || fail_boot "ip addr add $IP"
fi
if [ -n "$IP6" ]; then
    ip -6 addr add "$IP6" dev eth0 || fail_boot "ip -6 addr add $IP6"
fi
ip link set eth0 up || fail_boot "ip link set eth0 up"
if [ -n "$GW" ]; then
    # A /32 guest reaches its gateway on-link, and everything else through it.
    ip route add "$GW" dev eth0 2>/dev/null
    ip route add default via "$GW" dev eth0 || fail_boot "ip route add default via $GW"
fi
if [ -n "$GW6" ]; then
    # Likewise the /128: the gateway on-link (found by neighbour discovery), then the
    # default route through it.
    ip -6 route add "$GW6" dev eth0 || fail_boot "ip -6 route add $GW6 dev eth0"
    ip -6 route add default via "$GW6" dev eth0 || fail_boot "ip -6 route add default via $GW6"
fi
echo "NETPATH-NET eth0 ip=$IP gw=$GW ip6=$IP6 gw6=$GW6 mac=$HWADDR"
echo "NETPATH-RESULT guest-net ok"

if [ -e /test.sh ]; then
    sh -c '. /lib/netpath.sh; . /test.sh' </dev/null 2>&1
    rc=$?
else
    rc=no-script
fi
echo "NETPATH-DONE rc=$rc"
poweroff -f
sleep 10
