"""fennec driven by firecracker-python (PyPI), the way that library drives Firecracker.

Usage: drive.py FIRECRACKER_BINARY DATA_DIR KERNEL

The binary is started by the library's own ProcessManager with the exact arguments its MicroVM
class uses (--api-sock, --id, --log-path), then driven through its Api client: describe,
version, boot source, machine config, metrics, MMDS, vsock (as its MicroVM configures it),
InstanceStart, pause, resume, a refused
request, FlushMetrics, and SendCtrlAltDel to stop. Prints one line per step and
"FC-PYTHON OK" at the end; exits 1 at the first step that is not answered as Firecracker
answers it.
"""

import json
import os
import socket
import sys
import time

import psutil
from firecracker.api import Api, Resource
from firecracker.exceptions import APIError
from firecracker.process import ProcessManager


def check(ok, what):
    if not ok:
        print(f"FC-PYTHON FAIL {what}", flush=True)
        sys.exit(1)
    print(f"FC-PYTHON ok {what}", flush=True)


def main():
    binary, data, kernel = sys.argv[1:4]
    vm_id = "fcpy-1"
    pm = ProcessManager(verbose=False)
    pm._config.binary_path = binary
    pm._config.data_path = data
    vm_dir = os.path.join(data, vm_id)
    os.makedirs(vm_dir, exist_ok=True)
    sock = os.path.join(vm_dir, "firecracker.socket")
    log = os.path.join(vm_dir, f"{vm_id}.log")
    open(log, "w").close()
    # As firecracker.microvm.MicroVM._run_firecracker starts Firecracker.
    pid = pm.start(vm_id, ["--api-sock", sock, "--id", vm_id, "--log-path", log])
    check(pm.is_running(vm_id), f"started as pid {pid}")
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    check(os.path.exists(sock), f"the socket {sock} (process {psutil.Process(pid).status()})")
    api = Api(sock)

    info = api.describe.get().json()
    check(info["id"] == vm_id and info["state"] == "Not started", f"describe {info}")
    version = api.version.get().json()
    check(version["firecracker_version"].startswith("1."), f"version {version}")

    api.boot.put(kernel_image_path=kernel, boot_args="console=ttyS0 tiny.mode=counter")
    api.machine_config.put(vcpu_count=1, mem_size_mib=64)
    check(api.machine_config.get().json()["mem_size_mib"] == 64, "machine config")
    metrics = os.path.join(vm_dir, "metrics.json")
    open(metrics, "w").close()
    Resource(api, "/metrics").put(metrics_path=metrics)
    api.mmds.put(latest={"meta-data": {"instance-id": vm_id}})
    check(api.mmds.get().json()["latest"]["meta-data"]["instance-id"] == vm_id, "mmds")

    # As firecracker.microvm.MicroVM._configure_vmm_vsock configures it.
    uds = os.path.join(vm_dir, "v.sock")
    try:
        api.vsock.put(guest_cid=2, uds_path=uds)
        check(False, "a reserved guest CID is refused")
    except APIError as e:
        check("guest_cid" in str(e), f"a reserved guest CID is refused: {e}")
    api.vsock.put(guest_cid=3, uds_path=uds)

    api.actions.put(action_type="InstanceStart")
    check(api.describe.get().json()["state"] == "Running", "InstanceStart")
    # The tiny guest has no vsock driver: a host connection is closed, as when nobody listens.
    host = socket.socket(socket.AF_UNIX)
    host.connect(uds)
    host.sendall(b"CONNECT 52\n")
    host.settimeout(10)
    check(host.recv(16) == b"", "a host vsock connection nobody accepts is closed")
    host.close()
    api.vm.patch(state="Paused")
    check(api.describe.get().json()["state"] == "Paused", "paused")
    api.vm.patch(state="Resumed")
    check(api.describe.get().json()["state"] == "Running", "resumed")
    try:
        api.vm.patch(state="Asleep")
        check(False, "a bad state is refused")
    except APIError as e:
        check("Asleep" in str(e), f"a bad state is refused: {e}")
    api.actions.put(action_type="FlushMetrics")
    lines = [json.loads(line) for line in open(metrics).read().splitlines()]
    check(lines and lines[-1]["utc_timestamp_ms"] > 0, f"{len(lines)} metrics lines")

    api.actions.put(action_type="SendCtrlAltDel")
    proc = psutil.Process(pid)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        check(False, "the VM ends after SendCtrlAltDel")
    check(True, "the VM ended after SendCtrlAltDel")
    print("FC-PYTHON OK", flush=True)


if __name__ == "__main__":
    main()
