"""Hostile inputs and node attacks, before and after the hardening (docs/security.md).

Each file attack runs ``read_image`` on one generated bomb (tests/helpers/hostile.py, a few KB each) in
a fresh interpreter under an address-space limit (``RLIMIT_AS``, default 6 GiB, so a bomb
cannot take the shared machine down) and a wall-clock limit; the child's peak RSS
(VmHWM, or ``ru_maxrss`` for a child that died), wall time and outcome are recorded. The node attacks run against a Storage SCP
in a fresh interpreter (the code under test's own server, 16 KiB PDUs and a 64 MiB data set
cap where it has those settings) on 127.0.0.1, from this process or a sender child, with
bounded loops; the server's peak RSS growth (VmHWM, reset before each attack) and whether a
legitimate C-ECHO still gets through are recorded.

``--root DIR`` selects the code under test (a checkout of monai-fracture; children run with it
as their working folder's PYTHONPATH, never this tree): run it once on the
commit before the hardening (``git archive BASE | tar -x -C DIR``) and once on this tree.

The budget rows read files (a 16-bit radiograph, a 16-frame one, a CT series, a deflated file)
sized at 90 % and 110 % of ``--budget-mib`` under that budget (``MONAI_FRACTURE_MAX_IMAGE_MIB``)
and record the read's own peak RSS (the child's peak minus its RSS after the imports).

    python -m benchmarks.bench_hostile [--root DIR] [--limit-gib 6] [--timeout 120] [--budget-mib 256] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))

from helpers import hostile  # noqa: E402  (tests/helpers/hostile.py: the generators)

FILE_DRIVER = r"""
import json, resource, sys, time
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from monai_fracture.io import read_image, ImageReadError
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
baseline = rss()  # after the imports: what the read itself adds is the peak minus this
started = time.perf_counter()
try:
    image, _ = read_image(sys.argv[1])
    outcome = f"decoded {image.shape}"
    del image
except ImageReadError as err:
    outcome = f"refused: {err.reason.value}: {err.detail[:140]}"
except MemoryError:
    outcome = "MemoryError"
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve from the forking parent
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started, "maxrss_mib": peak,
                  "read_peak_mib": round(peak - baseline, 1)}))
"""

NODE_DRIVER = r"""
import json, resource, sys, threading, time
from pathlib import Path
from monai_fracture.pacs.config import build_config
from monai_fracture.pacs.queue import StudyQueue
from monai_fracture.pacs.scp import StorageHandlers, build_storage_ae
for extra in ({"max_pdu_bytes": 16384, "max_dataset_bytes": 64 << 20}, {"max_pdu_bytes": 16384}, {}):
    try:  # the streamed-store cap where the code under test has one; small PDUs where it can set them
        config = build_config({"work_dir": sys.argv[1], "port": 0, **extra})
        break
    except (TypeError, ValueError):
        continue
ae = build_storage_ae(config)
handlers = StorageHandlers(StudyQueue(config.work_dir, 10, 1 << 30)).handlers()
try:
    from monai_fracture.pacs.guard import start_guarded_server
    from monai_fracture.pacs.scp import connection_limits
    server = start_guarded_server(ae, ("127.0.0.1", 0), connection_limits(config), handlers)
except ImportError:
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
def peak():  # VmHWM: the peak RSS since the last reset
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
print(json.dumps({"port": server.server_address[1], "rss_mib": rss()}), flush=True)
while line := sys.stdin.readline():
    if line.strip() == "reset":
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    print(json.dumps({"rss_mib": rss(), "peak_mib": peak()}), flush=True)
"""


#: The attacker's address: another loopback address, so per-address limits tell it from the legitimate caller.
ATTACKER = "127.0.0.2"


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}


def budget_cases(folder: Path, budget_mib: int) -> dict[str, Path]:
    """Files and a series whose decode cost (pixel_limits.decode_cost) is 90 % and 110 % of the budget."""
    budget = budget_mib << 20
    cases: dict[str, Path] = {}
    for share in (90, 110):
        values = budget * share // 100 // 8  # 16-bit native: 2 (read) + 2 (decoded) + 4 (float32) bytes a value
        cases[f"native_16bit_{share}pct"] = hostile.write_native(folder / f"native{share}.dcm", values // 2048, 2048)
        frames = 16  # first-frame rule: all frames held, one decoded (6 bytes a value)
        rows = budget * share // 100 // (2048 * (2 * frames + 6))
        cases[f"multiframe_{frames}_{share}pct"] = hostile.write_native(folder / f"multi{share}.dcm", rows, 2048, frames)
        slices = budget * share // 100 // (512 * 512 * 6 + 1024)  # file (2) + float32 volume (4) a value
        series = folder / f"series{share}"
        series.mkdir()
        for k in range(slices):
            hostile.write_native(series / f"{k:04d}.dcm", 512, 512, modality="CT", z=float(k))
        cases[f"ct_series_{slices}x512x512_{share}pct"] = series
        # held twice (the inflated body and the element copies): inflating to 45 % and 55 % of the budget
        cases[f"deflate_{share}pct"] = hostile.write_deflate_bomb(folder / f"deflate{share}.dcm", budget * share // 200)
    return cases


def file_attacks(root: Path, folder: Path, limit: int, timeout: float, budget_mib: int | None = None) -> list[dict]:
    if budget_mib:
        cases = budget_cases(folder, budget_mib)
    else:
        cases = {name: hostile.write_stream_bomb(folder, name) for name in hostile.STREAM_BOMBS}
        cases["deflate_2gib"] = hostile.write_deflate_bomb(folder / "deflate.dcm", 2 << 30)
    env = {**_env(root), **({"MONAI_FRACTURE_MAX_IMAGE_MIB": str(budget_mib)} if budget_mib else {})}
    rows = []
    for name, path in cases.items():
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", FILE_DRIVER, str(path), str(limit)], env=env, cwd=folder,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        usage = None
        while usage is None:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                usage = (status, rusage)
            elif time.perf_counter() - started > timeout:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                usage = (None, rusage)
            else:
                time.sleep(0.05)
        status, rusage = usage
        proc.returncode = 0  # reaped above
        out = proc.stdout.read() if proc.stdout else ""
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if status is None:
            result = {"outcome": f"still running after {timeout:.0f} s (killed)"}
        else:
            result = json.loads(last) if last.startswith("{") else {"outcome": f"died (status {status})"}
        size = sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size
        result.update(attack=name, file_bytes=size, wall_s=round(time.perf_counter() - started, 2),
                      peak_rss_mib=round(result.get("maxrss_mib", rusage.ru_maxrss / 1024), 1))
        rows.append(result)
        print(json.dumps(result), flush=True)
    return rows


def _echo(port: int, timeout: float = 10.0) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="MONAI_FRACTURE")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def node_attacks(root: Path, work: Path, send_mib: int, idle: int) -> list[dict]:
    proc = subprocess.Popen([sys.executable, "-c", NODE_DRIVER, str(work)], env=_env(root), text=True, cwd=work.parent,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdin is not None

    def sample(command: str = "") -> dict:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    rows = []
    try:
        start = json.loads(proc.stdout.readline())
        port = start["port"]
        # 1. an A-ASSOCIATE-RQ whose header claims 4 GB, then send_mib MiB of it
        before = sample("reset")
        sock = socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0))
        sent, chunk, refused = 0, bytes(1 << 20), False
        try:
            sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
            for _ in range(send_mib):
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            refused = True
        time.sleep(1.0)
        after = sample()
        sock.close()
        rows.append({"attack": f"A-ASSOCIATE-RQ claiming 4 GB, {send_mib} MiB sent", "sent_mib": sent >> 20,
                     "closed_by_node": refused, "rss_growth_mib": round(after["peak_mib"] - before["rss_mib"], 1)})
        print(json.dumps(rows[-1]), flush=True)
        # 2. one C-STORE data set of send_mib MiB streamed in 16 KiB P-DATA PDUs, then a small one
        before = sample("reset")
        started = time.perf_counter()
        sent = subprocess.run([sys.executable, "-c", hostile.STREAMED_STORE_SENDER, str(port), str(work.parent),
                               f"{send_mib << 20},{256 << 10}"], capture_output=True, text=True, timeout=600)
        after = sample()
        result = json.loads(sent.stdout.strip().splitlines()[-1]) if sent.returncode == 0 else {"error": sent.stderr[-300:]}
        rows.append({"attack": f"C-STORE of {send_mib} MiB in {result.get('pdu')}-byte PDUs, then 256 KiB",
                     "statuses": [f"0x{s:04X}" if s is not None else None for s in result.get("statuses", [])],
                     "wall_s": round(time.perf_counter() - started, 1), "echo_after": _echo(port), **result,
                     "rss_growth_mib": round(after["peak_mib"] - before["rss_mib"], 1)})
        print(json.dumps(rows[-1]), flush=True)
        # 3. idle TCP connections, then a legitimate C-ECHO while they are open and after they close
        conns = []
        for _ in range(idle):
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0)))
            except OSError:
                break
        time.sleep(0.5)
        started = time.perf_counter()
        echo_open = _echo(port)
        echo_open_s = time.perf_counter() - started
        for conn in conns:
            conn.close()
        started = time.perf_counter()
        echo_after = False
        while time.perf_counter() - started < 90 and not echo_after:
            echo_after = _echo(port, timeout=5)
        rows.append({"attack": f"{idle} idle TCP connections", "echo_while_open": echo_open,
                     "echo_while_open_s": round(echo_open_s, 2), "echo_after_close": echo_after,
                     "first_echo_after_close_s": round(time.perf_counter() - started, 2)})
        print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.kill()
        proc.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose code is attacked (default: this tree)")
    parser.add_argument("--limit-gib", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--send-mib", type=int, default=600)
    parser.add_argument("--idle", type=int, default=40)
    parser.add_argument("--budget-mib", type=int, default=256,
                        help="per-image budget for the budget rows: files at 90 %% and 110 %% of it (0: skip them)")
    parser.add_argument("--skip", choices=["files", "budget", "node"], action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        result = {"root": str(args.root), "limit_gib": args.limit_gib}
        if "files" not in args.skip:
            result["files"] = file_attacks(args.root, Path(tmp), int(args.limit_gib * (1 << 30)), args.timeout)
        if "budget" not in args.skip and args.budget_mib:
            budget_folder = Path(tmp) / "budget"
            budget_folder.mkdir()
            result["budget_mib"] = args.budget_mib
            result["budget"] = file_attacks(args.root, budget_folder, int(args.limit_gib * (1 << 30)), args.timeout,
                                            args.budget_mib)
            shutil.rmtree(budget_folder)
        if "node" not in args.skip:
            result["node"] = node_attacks(args.root, Path(tmp) / "work", args.send_mib, args.idle)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
