"""Topology detection on recorded sysfs trees, NUMA maps, synthetic hosts, cpulists."""

from __future__ import annotations

import filecmp
import json
import os
import sys
from pathlib import Path

import pytest

from stmpo_celery.errors import BadInput, ExitCode
from stmpo_celery.host._numamap import load_numa_map
from stmpo_celery.host._topology import detect
from stmpo_celery.plan._topology import (
    adopt_cores,
    format_cpulist,
    from_counts,
    parse_cpulist,
    synthetic,
)

DATA = Path(__file__).parent / "data" / "topologies"
MAPS = Path(__file__).parent.parent / "worker_config" / "numa_maps"
ALL = set(range(1024))


def tree(name: str) -> Path:
    return DATA / name / "sys"


# --------------------------------------------------------------------------- cpulists


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]), ("5", [5]), ("", []), (" 0-1 , 4\n", [0, 1, 4])],
)
def test_parse_cpulist(text: str, ids: list[int]) -> None:
    assert parse_cpulist(text) == ids


@pytest.mark.parametrize("text", ["a", "3-1", "0-3,,5", "1-2-3", "-1", "0-99999999"])
def test_parse_cpulist_rejects(text: str) -> None:
    with pytest.raises(BadInput):
        parse_cpulist(text)


def test_format_cpulist_round_trips() -> None:
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10, 3]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""
    ids = [0, 2, 3, 4, 9, 63, 64, 65, 200]
    assert parse_cpulist(format_cpulist(ids)) == ids


# --------------------------------------------------------------------------- detect


def test_dual_epyc_256() -> None:
    t = detect(tree("dual_epyc_256"), allowed=ALL)
    assert len(t.cpus) == 256 and t.source == "sysfs"
    assert t.nodes() == [0, 1] and t.sockets() == [0, 1] and t.groups() == [0]
    assert t.smt and len(t.cores()) == 128
    by_id = {c.id: c for c in t.cpus}
    assert by_id[0].core == by_id[128].core  # siblings N and N+128
    assert by_id[0].core != by_id[64].core  # same core_id 0, other socket
    assert format_cpulist(c.id for c in t.cpus_of(0)) == "0-63,128-191"
    assert format_cpulist(c.id for c in t.cpus_of(1)) == "64-127,192-255"
    assert all(len(sib) == 2 for sib in t.cores().values())
    assert "256 CPUs (128 cores, SMT on) on 2 NUMA node(s)" in t.describe()


def test_epyc_nps4() -> None:
    t = detect(tree("epyc_nps4_128"), allowed=ALL)
    assert len(t.cpus) == 128 and t.nodes() == [0, 1, 2, 3] and t.sockets() == [0]
    assert [len(t.cpus_of(n)) for n in t.nodes()] == [32, 32, 32, 32]
    assert format_cpulist(c.id for c in t.cpus_of(2)) == "32-47,96-111"
    assert {c.id: c.core for c in t.cpus}[96] == 32


def test_smt_off() -> None:
    t = detect(tree("smt_off_32"), allowed=ALL)
    assert len(t.cpus) == 32 and not t.smt and len(t.cores()) == 32
    assert [len(t.cpus_of(n)) for n in t.nodes()] == [16, 16]


def test_container_cpuset_of_two_siblings() -> None:
    """The cpuset {5, 37} of a 64-thread host: CPUs 5 and 37 are one core's two threads."""
    t = detect(tree("container_64"), allowed={5, 37})
    assert t.ids() == [5, 37]
    assert t.cores() == {5: (5, 37)} and t.smt
    assert t.nodes() == [0]


def test_container_cpuset_of_two_cores_on_two_nodes() -> None:
    t = detect(tree("container_64"), allowed={5, 21})
    assert t.cores() == {5: (5,), 21: (21,)} and not t.smt
    assert t.nodes() == [0, 1]


def test_default_allowed_is_the_process_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 131}, raising=False)
    t = detect(tree("dual_epyc_256"))
    assert t.ids() == [3, 131] and t.cores() == {3: (3, 131)}


def test_odd_sysfs_never_raises_and_says_what_it_guessed() -> None:
    t = detect(tree("odd_sysfs"), allowed=range(16))
    assert t.ids() == list(range(8))
    # 4 has no siblings file, 5 a garbage one: the partners' lists still pair them.
    assert t.cores() == {0: (0, 4), 1: (1, 5), 2: (2, 6), 3: (3,), 7: (7,)}
    assert {c.id: c.socket for c in t.cpus}[6] == 0  # package id -1
    assert t.nodes() == [0]  # node1 is memory-only
    text = " ".join(t.notes)
    assert "CPUs 8-15 have no sysfs entry" in text
    assert "CPUs 6-7 put on node 0" in text
    assert "no core facts for CPUs 7" in text


def test_missing_sysfs_falls_back_to_psutil(tmp_path: Path) -> None:
    t = detect(tmp_path / "nothing", allowed={0, 1})
    assert t.source == "psutil" and t.ids() == [0, 1]
    assert t.notes and "psutil" in t.notes[0]


def test_empty_allowed_is_bad_input() -> None:
    with pytest.raises(BadInput, match="no CPU is allowed"):
        detect(tree("smt_off_32"), allowed=[])


def test_from_counts_guesses_smt_pairs() -> None:
    linux = from_counts(16, 8)
    assert linux.cores()[0] == (0, 8) and linux.smt
    win = from_counts(16, 8, adjacent_siblings=True)
    assert win.cores()[0] == (0, 1) and win.cores()[14] == (14, 15)
    hybrid = from_counts(24, 16)  # P+E cores: pairs unknowable
    assert not hybrid.smt and any("cannot be paired" in n for n in hybrid.notes)
    grouped = from_counts(128, 64, group_sizes=[64, 64], adjacent_siblings=True)
    assert grouped.groups() == [0, 1] and {c.id: c.group for c in grouped.cpus}[64] == 1


# --------------------------------------------------------------------------- synthetic


def test_synthetic_linux_numbering() -> None:
    t = synthetic(256, numa_nodes=2, smt=True)
    assert t.source == "synthetic" and len(t.cores()) == 128
    assert format_cpulist(c.id for c in t.cpus_of(0)) == "0-63,128-191"
    assert t.cores()[5] == (5, 133) and t.sockets() == [0, 1]
    flat = synthetic(32, numa_nodes=4, smt=False)
    assert not flat.smt and [len(flat.cpus_of(n)) for n in flat.nodes()] == [8, 8, 8, 8]


def test_synthetic_windows_groups() -> None:
    t = synthetic(256, numa_nodes=2, smt=True, groups_of=64)
    assert t.groups() == [0, 1, 2, 3] and t.cores()[0] == (0, 1)
    assert format_cpulist(c.id for c in t.cpus_of(1)) == "128-255"


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"cpus": 0}, "--cpus"),
        ({"cpus": 7, "smt": True}, "--cpus 7 is odd"),
        ({"cpus": 8, "numa_nodes": 5, "smt": True}, "--numa-nodes"),
        ({"cpus": 8, "numa_nodes": 0}, "--numa-nodes"),
        ({"cpus": 64, "numa_nodes": 4, "sockets": 3}, "--sockets"),
        ({"cpus": 256, "groups_of": 128}, "processor groups"),
    ],
)
def test_synthetic_rejects_nonsense(kwargs: dict[str, int], flag: str) -> None:
    with pytest.raises(BadInput) as info:
        synthetic(**kwargs)  # type: ignore[arg-type]
    assert flag in info.value.message and "\n" not in info.value.message


# --------------------------------------------------------------------------- numa maps


def test_reference_format_example_loads() -> None:
    path = MAPS / "dual-epyc-256-reference.json"
    t = load_numa_map(path, allowed=set(range(256)))
    assert t.source == f"numa-map:{path}" and len(t.cpus) == 256
    assert format_cpulist(c.id for c in t.cpus_of(0)) == "0-63,128-191"
    assert format_cpulist(c.id for c in t.cpus_of(1)) == "64-127,192-255"
    assert not t.smt  # the reference format carries no siblings


def test_reference_format_takes_siblings_from_detection() -> None:
    t = load_numa_map(MAPS / "dual-epyc-256-reference.json", this_host=False)
    merged = adopt_cores(t, detect(tree("dual_epyc_256"), allowed=ALL))
    assert merged.smt and merged.cores()[0] == (0, 128) and merged.nodes() == [0, 1]


def test_rich_examples_load() -> None:
    nps4 = load_numa_map(MAPS / "epyc-nps4-128.json", this_host=False)
    assert nps4.nodes() == [0, 1, 2, 3] and nps4.cores()[16] == (16, 80)
    assert nps4 == load_numa_map(MAPS / "epyc-nps4-128.json", allowed=set(range(128)))
    win = load_numa_map(MAPS / "windows-4groups.json", this_host=False)
    assert win.groups() == [0, 1, 2, 3] and win.nodes() == [0, 1]
    assert {c.id: (c.node, c.group) for c in win.cpus}[100] == (0, 1)
    assert win.cores()[100] == (100, 101)
    recorded = load_numa_map(DATA / "windows_4groups" / "numa_map.json", this_host=False)
    assert recorded.cpus == win.cpus


def test_nested_nodes_list_is_the_reference_format(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"nodes": [[0, [1, 2]], [3]]}))
    t = load_numa_map(p, this_host=False)
    assert [c.id for c in t.cpus_of(0)] == [0, 1, 2] and [c.id for c in t.cpus_of(1)] == [3]


BAD_MAPS = [
    ("{not json", "is not JSON"),
    ("[0, 1, 2]", "wrong shape (list)"),
    ("{}", "has no nodes"),
    ('{"group_0": [0, 1, 2], "group_1": [2, 3]}', "lists CPUs 2 twice (node 0, node 1)"),
    ('{"group_0": [0, 1, 1]}', "lists CPUs 1 twice"),
    ('{"group_0": [0, 1], "group_1": []}', "node 1 has no CPUs"),
    ('{"group_0": [0, -1]}', "CPU id -1"),
    ('{"group_0": [0, "x"]}', "'x', which is not a CPU id"),
    ('{"group_0": [0, 1.5]}', "1.5, which is not a CPU id"),
    ('{"group_0": [0], "socket_1": [1]}', "unknown key 'socket_1'"),
    ('{"group_0": [0], "group_0": [1]}', "has the key 'group_0' twice"),
    ('{"nodes": [{"id": 0}]}', 'node #0 has no "cpus"'),
    ('{"nodes": [{"cpus": "0-3", "colour": 1}]}', "unknown key 'colour'"),
    ('{"nodes": [{"cpus": "0-3,x"}]}', "'x' is not a CPU id or range"),
    ('{"nodes": [{"cpus": "0-3", "cores": [[0, 9]]}]}', "names CPUs 9 outside the node"),
    ('{"nodes": [{"cpus": "0-3", "cores": [[0, 1], [1, 2]]}]}', "puts CPUs 1 in two cores"),
    ('{"nodes": [{"cpus": "0-1", "group": 0}, {"cpus": "2-3"}]}', '"group" for some nodes'),
    ('{"nodes": [{"cpus": "0-99", "group": 0}]}', "in processor group 0"),
    ('{"nodes": [{"cpus": "64-127", "group": 0}, {"cpus": "0-63", "group": 1}]}', "group 1"),
    ('{"nodes": [{"id": 0, "cpus": "0-1"}, {"id": 0, "cpus": "2-3"}]}', "defines node 0 twice"),
    ('{"nodes": [{"id": -2, "cpus": "0-1"}]}', '"id": -2'),
]


@pytest.mark.parametrize(("text", "problem"), BAD_MAPS)
def test_bad_numa_maps_are_one_line_bad_input(tmp_path: Path, text: str, problem: str) -> None:
    p = tmp_path / "map.json"
    p.write_text(text)
    with pytest.raises(BadInput) as info:
        load_numa_map(p, this_host=False)
    msg = info.value.message
    assert info.value.code == ExitCode.BAD_INPUT
    assert problem in msg, msg
    assert str(p) in msg and "\n" not in msg and ": " in msg


def test_map_naming_cpus_this_process_may_not_use(tmp_path: Path) -> None:
    p = tmp_path / "host.json"
    p.write_text(json.dumps({"group_0": list(range(64)), "group_1": list(range(64, 128))}))
    with pytest.raises(BadInput) as info:
        load_numa_map(p, allowed=set(range(64)))
    assert info.value.message == (
        f"numa map {p} names CPUs 64-127 that this process may not use (allowed: 0-63): "
        "use a map made for this host or drop --numa-map to detect the topology"
    )
    assert len(load_numa_map(p, allowed=set(range(64)), this_host=False).cpus) == 128


def test_missing_map_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read numa map .*nope.json"):
        load_numa_map(tmp_path / "nope.json")


def test_windows_map_over_64_cpus_needs_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "win.json"
    p.write_text(json.dumps({"group_0": list(range(128))}))
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(BadInput, match='no processor groups: on Windows give every node a "group"'):
        load_numa_map(p, allowed=set(range(128)))
    ok = load_numa_map(MAPS / "windows-4groups.json", allowed=set(range(256)))
    assert ok.groups() == [0, 1, 2, 3]


def test_recorded_trees_match_their_generator(tmp_path: Path) -> None:
    sys.path.insert(0, str(DATA))
    try:
        import make_trees
    finally:
        sys.path.remove(str(DATA))
    make_trees.main(tmp_path)
    for name in make_trees.HOSTS:
        cmp = filecmp.dircmp(DATA / name, tmp_path / name)
        stack = [cmp]
        while stack:
            c = stack.pop()
            assert not (c.left_only or c.right_only or c.diff_files), (name, c.left)
            stack.extend(c.subdirs.values())
