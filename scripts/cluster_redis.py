"""The Redis part of the loopback topology: two nodes (a primary and a replica, AOF on) and three
Sentinels (quorum 2) that elect the primary; mixed into scripts/cluster_topology.py's Cluster."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cluster_processes import Process, _program, listening, wait_for

SERVICE = "citizen-lookup"  # the Sentinels' name for the Redis service


class RedisParts:
    """Needs ``path``, ``ports``, ``processes``, ``redis_password`` and ``down_after_ms``."""

    path: Path
    ports: dict[str, int]
    processes: dict[str, Process]
    redis_password: str
    down_after_ms: int

    @property
    def redis_url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{self.ports[f'sentinel_{i}']}" for i in range(3))
        return f"redis+sentinel://:{self.redis_password}@{sentinels}/{SERVICE}/0"

    def _redis_conf(self, index: int, replica_of: int | None) -> Path:
        folder = self.path / f"redis_{index}"
        folder.mkdir(exist_ok=True)
        conf = folder / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.ports[f'redis_{index}']}",
            f"dir {folder}",
            "daemonize no",
            'save ""',
            # The queue survives a restart of a node: appended to disk every second.
            "appendonly yes",
            "appendfsync everysec",
            f"requirepass {self.redis_password}",
            f"masterauth {self.redis_password}",
        ]
        if replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        return conf

    def start_redis(self, index: int, replica_of: int | None = None) -> None:
        """Start Redis node ``index``, as a replica of the node on port ``replica_of`` if given.

        A node restarted after a failover must come back as a replica of the new primary: were
        it to start as a primary (empty, or with an old file), the Sentinels would demote it,
        but a replica syncing from it meanwhile would lose its data.
        """
        conf = self._redis_conf(index, replica_of)
        name = f"redis_{index}"
        process = Process(
            name,
            [_program("redis-server") or "redis-server", str(conf)],
            str(self.path / f"{name}.log"),
            marker=f"127.0.0.1:{self.ports[name]}",  # Redis retitles itself "… host:port"
        )
        process.start()
        self.processes[name] = process
        port = self.ports[name]
        wait_for(lambda: listening(port), 15, f"{name} on port {port}")

    def redis_client(self, index: int) -> Any:
        from redis import Redis

        return Redis(
            port=self.ports[f"redis_{index}"],
            password=self.redis_password,
            socket_timeout=2,
            socket_connect_timeout=1,
        )

    def start_sentinel(self, index: int, primary_port: int) -> None:
        folder = self.path / f"sentinel_{index}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"
        if not conf.exists():  # the Sentinel rewrites its file: a restart keeps what it learnt
            conf.write_text(
                "\n".join(
                    [
                        "bind 127.0.0.1",
                        f"port {self.ports[f'sentinel_{index}']}",
                        f"dir {folder}",
                        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
                        f"sentinel auth-pass {SERVICE} {self.redis_password}",
                        f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                        f"sentinel failover-timeout {SERVICE} 10000",
                        f"sentinel parallel-syncs {SERVICE} 1",
                    ]
                )
                + "\n"
            )
            conf.chmod(0o600)
        name = f"sentinel_{index}"
        process = Process(
            name,
            [_program("redis-server") or "redis-server", str(conf), "--sentinel"],
            str(self.path / f"{name}.log"),
            marker=f"127.0.0.1:{self.ports[name]}",  # Redis retitles itself "… host:port"
        )
        process.start()
        self.processes[name] = process
        port = self.ports[name]
        wait_for(lambda: listening(port), 15, f"{name} on port {port}")

    def sentinel_client(self, index: int) -> Any:
        from redis import Redis

        return Redis(
            port=self.ports[f"sentinel_{index}"], socket_timeout=1, socket_connect_timeout=1
        )

    def redis_primary(self) -> int | None:
        """The Redis node the Sentinels name as primary (its index), or None if none answers."""
        by_port = {self.ports[f"redis_{i}"]: i for i in range(2)}
        for i in range(3):
            with contextlib.suppress(Exception):
                answer = self.sentinel_client(i).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
                if answer:
                    return by_port.get(int(answer[1]))
        return None

    def sentinels_agree(self, primary: int, replicas: int) -> bool:
        """Every Sentinel names ``primary``, sees the other two and ``replicas`` live replicas."""
        port = self.ports[f"redis_{primary}"]
        for i in range(3):
            client = self.sentinel_client(i)
            info = _text(client.execute_command("SENTINEL", "MASTER", SERVICE))
            if int(info["port"]) != port or "s_down" in info["flags"]:
                return False
            if int(info["num-other-sentinels"]) < 2:
                return False
            live = [
                r
                for r in map(_text, client.execute_command("SENTINEL", "REPLICAS", SERVICE))
                if "s_down" not in r["flags"] and r["master-link-status"] == "ok"
            ]
            if len(live) < replicas:
                return False
        return True

    def replication_up(self, replica: int) -> bool:
        info = self.redis_client(replica).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _text(answer: dict[bytes, bytes]) -> dict[str, str]:
    """A Sentinel's answer (redis-py parses it into a dict of bytes) as text."""
    return {key.decode(): value.decode() for key, value in answer.items()}

    """A Sentinel's answer (redis-py parses it into a dict of bytes) as text."""
    return {key.decode(): value.decode() for key, value in answer.items()}
