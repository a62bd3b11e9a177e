"""Write the recorded host topologies the topology and affinity tests read.

Each sysfs tree holds only the files ``stmpo_celery.host._topology.detect`` reads:
``sys/devices/system/cpu/cpuN/topology/{physical_package_id,core_id,thread_siblings_list}``
and ``sys/devices/system/node/nodeN/cpulist``, with the contents Linux writes there.
The Windows host is a rich-format numa map (Windows has no sysfs).

Regenerate with ``python tests/data/topologies/make_trees.py`` (writes beside this file)
or ``python make_trees.py OUT_DIR``; a test checks the stored trees match this script.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def cpulist(ids: list[int]) -> str:
    """Linux's cpulist text: ``0-3,8``."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


def linux_host(
    root: Path,
    cpus: dict[int, tuple[int | str, int | str, list[int]]],
    nodes: dict[int, list[int]],
) -> None:
    """cpus: id -> (physical_package_id, core_id, thread siblings); nodes: id -> cpus."""
    for i, (pkg, core, sib) in cpus.items():
        base = f"sys/devices/system/cpu/cpu{i}/topology"
        write(root, f"{base}/physical_package_id", str(pkg))
        write(root, f"{base}/core_id", str(core))
        write(root, f"{base}/thread_siblings_list", cpulist(sib))
    for n, ids in nodes.items():
        write(root, f"sys/devices/system/node/node{n}/cpulist", cpulist(ids))


def smt_host(root: Path, sockets: int, cores_per_socket: int, nodes_per_socket: int) -> None:
    """Linux numbering: the first thread of every core, then the second (i and i + cores)."""
    cores = sockets * cores_per_socket
    cpus: dict[int, tuple[int | str, int | str, list[int]]] = {}
    nodes: dict[int, list[int]] = {}
    per_node = cores_per_socket // nodes_per_socket
    for c in range(cores):
        sib = [c, c + cores]
        for i in sib:
            cpus[i] = (c // cores_per_socket, c % cores_per_socket, sib)
        nodes.setdefault(c // per_node, []).extend(sib)
    linux_host(root, dict(sorted(cpus.items())), nodes)


def dual_epyc_256(root: Path) -> None:
    """2 x EPYC 7742: 2 sockets = 2 nodes, 64 cores each, siblings N and N+128."""
    smt_host(root, sockets=2, cores_per_socket=64, nodes_per_socket=1)


def epyc_nps4_128(root: Path) -> None:
    """1 x 64-core EPYC in NPS4: 4 nodes of 16 cores, siblings N and N+64."""
    smt_host(root, sockets=1, cores_per_socket=64, nodes_per_socket=4)


def smt_off_32(root: Path) -> None:
    """2 sockets = 2 nodes of 16 CPUs, SMT disabled: every CPU is its own sibling list."""
    cpus: dict[int, tuple[int | str, int | str, list[int]]] = {
        i: (i // 16, i % 16, [i]) for i in range(32)
    }
    linux_host(root, cpus, {0: list(range(16)), 1: list(range(16, 32))})


def container_64(root: Path) -> None:
    """The host a container runs on: 32 cores, 64 threads (siblings N and N+32), 2 nodes.
    The tests pass allowed={5, 37} (one core's two siblings) as a cpuset would."""
    smt_host(root, sockets=1, cores_per_socket=32, nodes_per_socket=2)


def odd_sysfs(root: Path) -> None:
    """8 CPUs with the oddities detection must survive: a missing siblings file, a garbage
    one, package id -1, a CPU without topology files, a memory-only node and non-CPU
    entries beside cpuN. Every directory holds a file, so git keeps it."""
    cpus: dict[int, tuple[int | str, int | str, list[int]]] = {
        0: (0, 0, [0, 4]),
        1: (0, 1, [1, 5]),
        2: (0, 2, [2, 6]),
        3: (0, 3, [3]),
        5: (0, 1, [1, 5]),
        6: (-1, 2, [2, 6]),
    }
    linux_host(root, cpus, {0: [0, 1, 2, 3, 4, 5]})
    base = "sys/devices/system"
    write(root, f"{base}/cpu/cpu4/topology/core_id", "0")  # no siblings file
    write(root, f"{base}/cpu/cpu4/topology/physical_package_id", "0")
    write(root, f"{base}/cpu/cpu5/topology/thread_siblings_list", "zz-top")  # garbage
    write(root, f"{base}/cpu/cpu7/online", "1")  # no topology directory at all
    write(root, f"{base}/cpu/online", "0-7")
    write(root, f"{base}/cpu/cpufreq/boost", "0")  # a directory that is not a CPU
    write(root, f"{base}/node/node1/cpulist", "")  # memory-only (CXL) node


def windows_4groups(root: Path) -> None:
    """2 sockets x 64 cores x 2 threads on Windows: 256 CPUs in 4 processor groups of 64.
    Windows numbers siblings next to each other; each NUMA node (128 CPUs) spans 2 groups."""
    nodes = []
    for g in range(4):
        ids = list(range(64 * g, 64 * g + 64))
        nodes.append(
            {
                "id": g // 2,
                "group": g,
                "socket": g // 2,
                "cpus": cpulist(ids),
                "cores": [[i, i + 1] for i in ids[::2]],
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"nodes": nodes}, separators=(",", ":"))
    (root / "numa_map.json").write_text(text + "\n", encoding="ascii")


HOSTS = {
    "dual_epyc_256": dual_epyc_256,
    "epyc_nps4_128": epyc_nps4_128,
    "smt_off_32": smt_off_32,
    "container_64": container_64,
    "odd_sysfs": odd_sysfs,
    "windows_4groups": windows_4groups,
}


def main(out: Path) -> None:
    for name, make in HOSTS.items():
        shutil.rmtree(out / name, ignore_errors=True)
        make(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
