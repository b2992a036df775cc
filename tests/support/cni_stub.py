#!/usr/bin/python3
"""The smallest CNI plugin a pod network namespace needs, for tests only.

Installed by tests/support/kubelet.rs as `loopback` (containerd always runs
that network for `lo`) and as `dw-pod-net` (the pod network) in a private
containerd's CNI bin directory. ADD brings `lo` up, or makes the pod's
interface one end of a veth pair whose other end stays in the pod's
namespace too, holding the configured address: the pod gets its own network
namespace with an address, exactly as with a real CNI, but no interface,
bridge, route or firewall rule is made on the host and no packet leaves the
namespace (probes reach the pod from inside it, see
kubelet::http_get_in_netns). DEL has nothing to undo: the namespace goes
with the sandbox. (A veth pair, not a dummy device: kernels without
CONFIG_DUMMY, like this CI's, have veth.)
"""
import json
import os
import subprocess
import sys

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def ip(netns, *args):
    subprocess.run(["nsenter", f"--net={netns}", "ip", *args], check=True, stdout=subprocess.DEVNULL)


def main():
    cmd = os.environ.get("CNI_COMMAND", "")
    if cmd == "VERSION":
        print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}))
        return 0
    if cmd != "ADD":
        return 0  # DEL, CHECK, GC, STATUS: nothing to do
    conf = json.load(sys.stdin)
    version = conf.get("cniVersion", "0.4.0")
    netns, ifname = os.environ["CNI_NETNS"], os.environ["CNI_IFNAME"]
    if conf["type"] == "loopback":
        ip(netns, "link", "set", "lo", "up")
        address = "127.0.0.1/8"
    else:
        address = conf["address"]
        peer = ifname + "p"
        ip(netns, "link", "add", ifname, "type", "veth", "peer", "name", peer)
        ip(netns, "addr", "add", address, "dev", ifname)
        ip(netns, "link", "set", peer, "up")
        ip(netns, "link", "set", ifname, "up")
    ipconf = {"address": address, "interface": 0}
    if version.startswith("0."):
        ipconf["version"] = "4"
    print(json.dumps({"cniVersion": version, "interfaces": [{"name": ifname, "sandbox": netns}], "ips": [ipconf]}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # CNI wants errors as JSON on stdout
        print(json.dumps({"cniVersion": "0.4.0", "code": 999, "msg": f"cni_stub: {e}"}))
        sys.exit(1)
