"""Affinity blocks on recorded topologies: every rule of stmpo_celery.plan._affinity, for
several slot counts each, plus the Windows (group, mask) conversion."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stmpo_celery.errors import BadInput
from stmpo_celery.host import _winaffinity as winaffinity
from stmpo_celery.host._numamap import load_numa_map
from stmpo_celery.host._topology import detect
from stmpo_celery.plan._affinity import BlockPlan, group_affinity, plan_blocks
from stmpo_celery.plan._topology import Topology, synthetic

DATA = Path(__file__).parent / "data" / "topologies"
ALL = set(range(1024))


def recorded(name: str) -> Topology:
    if name == "windows_4groups":
        return load_numa_map(DATA / name / "numa_map.json", this_host=False)
    if name == "container_64":
        return detect(DATA / name / "sys", allowed={5, 37})
    return detect(DATA / name / "sys", allowed=ALL)


HOSTS = ["dual_epyc_256", "epyc_nps4_128", "smt_off_32", "container_64", "windows_4groups"]
SLOTS = [1, 2, 3, 4, 7, 16, "cpus+1"]


def check_rules(topo: Topology, n: int, plan: BlockPlan) -> None:
    """Assert every block rule; returns nothing, fails loudly."""
    blocks = plan.blocks
    node_of = {c.id: c.node for c in topo.cpus}
    group_of = {c.id: c.group for c in topo.cpus}
    cores = list(topo.cores().values())
    multi_group = len(topo.groups()) > 1
    # one block per slot, numbered, sorted, non-empty, only usable CPUs
    assert [b.slot for b in blocks] == list(range(n))
    for b in blocks:
        assert b.cpus and list(b.cpus) == sorted(set(b.cpus))
        assert set(b.cpus) <= set(node_of)
    # SMT siblings of a core always in the same block
    for b in blocks:
        for core in cores:
            assert not set(core) & set(b.cpus) or set(core) <= set(b.cpus), (b, core)
    # never crosses a processor group; group named on multi-group hosts only
    for b in blocks:
        groups = {group_of[i] for i in b.cpus}
        assert len(groups) == 1
        assert b.group == (groups.pop() if multi_group else None)
    # node field is right; no straddling once there are enough slots
    for b in blocks:
        nodes = {node_of[i] for i in b.cpus}
        assert b.node == (nodes.pop() if len(nodes) == 1 else None)
        if n >= len(topo.nodes()):
            assert b.node is not None, f"{b} straddles nodes with {n} slots"
    # exclusive unless more slots than cores; shared flag and note agree
    used = Counter(i for b in blocks for i in b.cpus)
    if n <= len(cores):
        assert not plan.shared and max(used.values()) == 1
    else:
        assert plan.shared and any("share cores round-robin" in note for note in plan.notes)
        assert set(used) == set(node_of)  # every CPU still serves some slot
    assert plan.shared == (max(used.values()) > 1)
    # every CPU is used, except groups a slot cannot reach (named in a note)
    if not any("stay idle" in note for note in plan.notes):
        assert set(used) == set(node_of)
    # within a node/group piece, blocks differ by at most one core
    pieces: dict[tuple[int | None, int], list[int]] = {}
    for b in blocks:
        n_cores = len({c for c in cores if set(c) <= set(b.cpus)})
        pieces.setdefault((b.node, group_of[b.cpus[0]]), []).append(n_cores)
    for sizes in pieces.values():
        assert max(sizes) - min(sizes) <= 1, pieces
    assert plan.notes and "\n" not in "".join(plan.notes)


def slot_count(topo: Topology, n: int | str) -> int:
    return len(topo.cpus) + 1 if n == "cpus+1" else int(n)


@pytest.mark.parametrize("n", SLOTS)
@pytest.mark.parametrize("host", HOSTS)
def test_block_rules_on_recorded_hosts(host: str, n: int | str) -> None:
    topo = recorded(host)
    k = slot_count(topo, n)
    plan = plan_blocks(topo, k)
    check_rules(topo, k, plan)
    assert plan == plan_blocks(topo, k)  # deterministic


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 12, 33, 64, 65, 200])
@pytest.mark.parametrize(
    "topo",
    [
        synthetic(96, numa_nodes=2, smt=True),
        synthetic(128, numa_nodes=4, smt=True, groups_of=64),  # 2 nodes per group
        synthetic(96, numa_nodes=2, smt=True, groups_of=48),
        synthetic(24, numa_nodes=3, smt=False),
    ],
)
def test_block_rules_on_synthetic_hosts(topo: Topology, n: int) -> None:
    check_rules(topo, n, plan_blocks(topo, n))


def test_dual_epyc_blocks_exactly() -> None:
    topo = recorded("dual_epyc_256")
    p16 = plan_blocks(topo, 16)
    assert p16.blocks[0].cpulist == "0-7,128-135" and p16.blocks[8].cpulist == "64-71,192-199"
    assert Counter(b.node for b in p16.blocks) == {0: 8, 1: 8}
    p2 = plan_blocks(topo, 2)
    assert [b.cpulist for b in p2.blocks] == ["0-63,128-191", "64-127,192-255"]
    p3 = plan_blocks(topo, 3)  # equal nodes: the extra slot goes to node 0
    assert [len(b.cpus) for b in p3.blocks] == [64, 64, 128]
    p7 = plan_blocks(topo, 7)
    assert Counter(b.node for b in p7.blocks) == {0: 4, 1: 3}
    assert sorted(len(b.cpus) for b in p7.blocks) == [32, 32, 32, 32, 42, 42, 44]


def test_fewer_slots_than_nodes_span_whole_nodes_and_say_so() -> None:
    topo = recorded("epyc_nps4_128")
    one = plan_blocks(topo, 1)
    assert one.blocks[0].node is None and len(one.blocks[0].cpus) == 128
    two = plan_blocks(topo, 2)
    assert [b.cpulist for b in two.blocks] == ["0-31,64-95", "32-63,96-127"]
    assert any("span whole nodes" in note for note in two.notes)
    four = plan_blocks(topo, 4)
    assert [b.node for b in four.blocks] == [0, 1, 2, 3]
    assert not any("span" in note for note in four.notes)


def test_unequal_nodes_get_slots_in_proportion(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"nodes": [{"cpus": "0-95"}, {"cpus": "96-127"}]}))
    topo = load_numa_map(p, this_host=False)
    assert Counter(b.node for b in plan_blocks(topo, 4).blocks) == {0: 3, 1: 1}
    assert Counter(b.node for b in plan_blocks(topo, 5).blocks) == {0: 4, 1: 1}
    assert Counter(b.node for b in plan_blocks(topo, 2).blocks) == {0: 1, 1: 1}
    assert {len(b.cpus) for b in plan_blocks(topo, 8).blocks} == {16}


def test_container_two_siblings() -> None:
    topo = recorded("container_64")
    one = plan_blocks(topo, 1)
    assert one.blocks[0].cpus == (5, 37) and not one.shared
    two = plan_blocks(topo, 2)  # one physical core: siblings are never split, so share
    assert [b.cpus for b in two.blocks] == [(5, 37), (5, 37)] and two.shared
    assert any("2 slots on 1 physical cores" in note for note in two.notes)
    apart = plan_blocks(detect(DATA / "container_64" / "sys", allowed={5, 6}), 2)
    assert [b.cpus for b in apart.blocks] == [(5,), (6,)] and not apart.shared


def test_smt_off_uses_single_cpus() -> None:
    plan = plan_blocks(recorded("smt_off_32"), 4)
    assert [b.cpulist for b in plan.blocks] == ["0-7", "8-15", "16-23", "24-31"]


def test_windows_groups_win_over_nodes() -> None:
    topo = recorded("windows_4groups")
    p4 = plan_blocks(topo, 4)
    assert [(b.cpulist, b.node, b.group) for b in p4.blocks] == [
        ("0-63", 0, 0), ("64-127", 0, 1), ("128-191", 1, 2), ("192-255", 1, 3)
    ]
    p2 = plan_blocks(topo, 2)  # one group per slot, spread over both nodes
    assert [(b.cpulist, b.group) for b in p2.blocks] == [("0-63", 0), ("128-191", 2)]
    assert any("128 CPUs (group(s) 1, 3) stay idle" in note for note in p2.notes)
    p16 = plan_blocks(topo, 16)
    assert Counter(b.group for b in p16.blocks) == {0: 4, 1: 4, 2: 4, 3: 4}


def test_two_nodes_in_one_group_share_it_when_slots_are_few() -> None:
    topo = synthetic(128, numa_nodes=4, smt=True, groups_of=64)
    plan = plan_blocks(topo, 2)
    assert [(b.cpulist, b.node, b.group) for b in plan.blocks] == [
        ("0-63", None, 0), ("64-127", None, 1)
    ]


def test_plan_lines_and_notes() -> None:
    plan = plan_blocks(recorded("windows_4groups"), 4)
    assert plan.lines()[0] == "slot 0: CPUs 0-63 (64 CPUs, node 0, group 0)"
    assert "4 x 64 CPUs" in plan.notes[0] and "4 processor groups" in plan.notes[0]


@pytest.mark.parametrize("n", [0, -3])
def test_slot_count_below_one_is_bad_input(n: int) -> None:
    with pytest.raises(BadInput, match="--concurrency"):
        plan_blocks(recorded("smt_off_32"), n)


# --------------------------------------------------------------------------- Windows masks


def test_group_affinity_of_windows_blocks() -> None:
    topo = recorded("windows_4groups")
    for n in (4, 7, 16):
        for b in plan_blocks(topo, n).blocks:
            group, mask = group_affinity(b.cpus, [64, 64, 64, 64])
            assert group == b.group
            assert bin(mask).count("1") == len(b.cpus) and mask < 1 << 64
            base = 64 * group
            assert mask == sum(1 << (i - base) for i in b.cpus)


def test_group_affinity_uneven_groups_and_errors() -> None:
    assert group_affinity([48, 49, 50], [48, 48]) == (1, 0b111)
    assert group_affinity([0], [48, 48]) == (0, 1)
    with pytest.raises(ValueError, match="span processor groups"):
        group_affinity([47, 48], [48, 48])
    with pytest.raises(ValueError, match="beyond"):
        group_affinity([96], [48, 48])
    with pytest.raises(ValueError):
        group_affinity([], [64])


def test_winaffinity_is_import_safe_and_inert_off_windows() -> None:
    assert winaffinity.processor_group_sizes() is None
    problem = winaffinity.pin_current_process([0, 1])
    assert problem is not None and "only on Windows" in problem


def test_an_unpinned_plan_says_its_cpus_per_slot_are_a_budget() -> None:
    """With --no-affinity, '16 CPUs per slot' on a 2-CPU host must not read as pinning."""
    from stmpo_celery.config._options import RenderOptions
    from stmpo_celery.host._hostplan import make_plan, other_host

    o = RenderOptions(project="p.aep", frames="1-40", output="o_[#].png", concurrency=2,
                      affinity=False)
    line = make_plan(o, list(range(1, 41)), True, other_host(2, 64), None).lines()[2]
    assert "16 CPUs per slot (a budget only: unpinned" in line, line
    o.affinity = True
    line = make_plan(o, list(range(1, 41)), True, other_host(2, 64), None).lines()[2]
    assert "unpinned" not in line and "(pinned to " in line, line
