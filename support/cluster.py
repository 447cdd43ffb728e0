"""A real Redis Cluster on loopback ports, for tests and benchmarks: masters with a replica each,
started with `redis-server --cluster-enabled yes` and joined with `redis-cli --cluster create`.

Each node is a child process of a ServiceGroup (stopped with it); `kill` stops one node the hard
way (SIGKILL), as a crashed machine would, so that a test can watch the cluster fail over.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from launcher.process import ServiceGroup, free_port, wait_until


@dataclass
class ClusterNode:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


@dataclass
class Cluster:
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed URL: the cluster client learns the other nodes from it."""
        return f"redis://{self.nodes[0].address}"

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc.poll() is None and n.answers() and n.client().info("replication")["role"] == "master"]

    def keys_per_master(self) -> dict[str, int]:
        return {n.address: int(n.client().dbsize()) for n in self.masters()}

    def replicas_in_sync(self) -> bool:
        """Every live replica's link to its master is up (a replica that never synced can't fail over)."""
        try:
            infos = [n.client().info("replication") for n in self.nodes if n.proc.poll() is None]
        except redis.RedisError:
            return False
        return all(i.get("master_link_status") == "up" for i in infos if i["role"] == "slave")

    def kill(self, node: ClusterNode) -> None:
        """Stop a node at once (SIGKILL): no shutdown, no last write to disk."""
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=10)

    def state_ok(self) -> bool:
        """Every live node serves every slot (after a failover too)."""
        try:
            return all(n.client().cluster("info")["cluster_state"] == "ok" for n in self.nodes if n.proc.poll() is None)
        except redis.RedisError:
            return False


def start_cluster(group: ServiceGroup, folder: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> Cluster:
    """Start masters * (1 + replicas) nodes (AOF on, each in its own folder) and form the cluster;
    returns once every slot is served and every node says cluster_state:ok."""
    cluster = Cluster()
    for _ in range(masters * (1 + replicas)):
        port = free_port()
        node_dir = folder / str(port)
        node_dir.mkdir(parents=True)
        argv = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-port", str(free_port()),  # the bus port: port + 10000 may be taken or past 65535
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms),
            "--appendonly", "yes", "--save", "", "--dir", str(node_dir),
            "--repl-diskless-sync-delay", "0",  # replicas in sync at once (5 s by default): one that never synced can't take over
        ]  # fmt: skip
        proc = group.start(f"redis-cluster-{port}", argv)
        node = ClusterNode(port, proc)
        wait_until(node.answers, 10, proc, f"cluster node {port}")
        cluster.nodes.append(node)
    create = ["redis-cli", "--cluster", "create", *(n.address for n in cluster.nodes), "--cluster-replicas", str(replicas), "--cluster-yes"]
    done = subprocess.run(create, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    wait_until(cluster.state_ok, 30, what="the cluster to serve every slot")
    wait_until(lambda: len(cluster.masters()) == masters, 30, what="the masters")
    wait_until(cluster.replicas_in_sync, 30, what="the replicas' first sync")
    return cluster
