"""Load test for the demo: concurrent /colorize and /colorize_file requests, a share of them bad
inputs, then a burst larger than the queue. Local servers only (127.0.0.1), bounded in count and time.

    python tools/load_test.py                         # starts serve.py on a free port with a tiny random model
    python tools/load_test.py --requests 20 --clients 4 --burst 12    # the reduced run the tests use
    python tools/load_test.py --url http://127.0.0.1:7860/ --server-pid PID --max-pixels 16777216
    python tools/load_test.py --requests 10000 --clients 20 --max-seconds 7200   # the soak

Every good request must come back as an image of its input's size, every bad one as an error that
says what is wrong; in the burst, each request gets an image or a clean "queue is full" refusal, and
the server answers normally afterwards. The server's resident memory is sampled (Linux /proc) and
printed every --report-every requests. From the warm-up point (a fifth of the requests) on, the mean
of the later half of these samples may exceed that of the earlier half by at most
--max-rss-growth-mb. Prints requests, failures and p50/p95 latency; --json PATH also writes the
numbers. Exit status 1 if anything failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LINE_SIZE = (61, 100)  # (W, H) of the good line art: non-square, so a swapped axis shows
BURST_SIZE = (900, 700)  # larger line art for the burst: each request holds the worker longer
TINY_MODEL = ["--model.depth=3", "--model.base_channels=8", "--model.max_channels=32", "--data.size=32",
              "--data.root=data/openmoji256"]

# name: (endpoint, expected error text or None for an image). Bad inputs cover each refusal serve.py makes.
GOOD = {"file/automatic": None, "file/palette": None, "file/hints": None, "editor/automatic": None,
        "editor/hints": None}
BAD = {"file/not-an-image": "not a readable image", "file/too-large": "more than the limit",
       "file/server-path": "must be an uploaded file", "editor/blank": "empty canvas",
       "editor/bad-palette": "is not a colour", "editor/no-strokes": "paint some strokes"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running demo on this machine (default: start serve.py with a tiny model)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, to sample its memory")
    parser.add_argument("--max-pixels", type=int, default=1024 * 1024,
                        help="the server's --max-pixels (the too-large input is just above it)")
    parser.add_argument("--requests", type=int, default=100, help="requests in the main phase")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients")
    parser.add_argument("--bad-fraction", type=float, default=0.3, help="share of bad inputs among the requests")
    parser.add_argument("--queue-size", type=int, default=0,
                        help="queue of the server this script starts (0 = --clients, so no good request waits in vain)")
    parser.add_argument("--burst", type=int, default=-1,
                        help="requests sent at once after the main phase (-1 = 3x the queue; 0 = no burst)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the whole test stops sending after this")
    parser.add_argument("--max-rss-growth-mb", type=float, default=100.0,
                        help="allowed growth of the server's memory after warm-up (later half of the "
                             "samples against the earlier half)")
    parser.add_argument("--report-every", type=int, default=0,
                        help="print the server's memory every N requests (0 = a tenth of --requests)")
    parser.add_argument("--seed", type=int, default=0, help="order of the request mix")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.url and urlparse(args.url).hostname not in LOCAL_HOSTS:
        parser.error(f"--url must point at this machine (127.0.0.1 or localhost), not {urlparse(args.url).hostname}")
    if min(args.requests, args.clients) < 1 or not 0 <= args.bad_fraction <= 1:
        parser.error("need --requests >= 1, --clients >= 1 and 0 <= --bad-fraction <= 1")
    args.queue_size = args.queue_size or args.clients
    args.report_every = args.report_every or max(1, args.requests // 10)
    if args.burst < 0:
        args.burst = 0 if args.url else 3 * args.queue_size
    return args


# ---- inputs and the server ------------------------------------------------------------------------

def line_art(path: Path, size) -> Path:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).ellipse((5, 5, size[0] - 10, size[1] - 10), outline=0, width=2)
    image.save(path)
    return path


def make_inputs(folder: Path, max_pixels: int) -> dict:
    strokes = Image.new("RGBA", LINE_SIZE, (0, 0, 0, 0))
    ImageDraw.Draw(strokes).ellipse((20, 30, 40, 60), fill=(230, 57, 70, 255))
    strokes.save(folder / "hints.png")
    (folder / "not_an_image.png").write_text("this is a text file, not a PNG")
    Image.new("RGB", (80, 60), "white").save(folder / "blank.png")
    side = math.isqrt(max_pixels) + 1
    return {"line": line_art(folder / "line.png", LINE_SIZE), "hints": folder / "hints.png",
            "bad": folder / "not_an_image.png", "blank": folder / "blank.png",
            "huge": line_art(folder / "huge.png", (side, side)), "large": line_art(folder / "large.png", BURST_SIZE)}


def write_tiny_export(folder: Path) -> Path:
    """A randomly initialised small generator as a serve-able export: the demo's path, not its quality."""
    sys.path.insert(0, str(ROOT))
    import torch
    from colorizer.checkpoint import export_generator
    from colorizer.config import load_config, to_dict
    from colorizer.models import build_generator

    cfg = load_config(overrides=TINY_MODEL)
    torch.manual_seed(0)
    generator = build_generator(cfg.model)
    return export_generator(folder, generator.state_dict(), to_dict(cfg), step=0, metrics={}, perceptual="off",
                            run_name="load-test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(export: Path, args, log_path: Path) -> tuple:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "serve.py"), "--checkpoint", str(export), "--host", "127.0.0.1",
           "--port", str(port), "--queue-size", str(args.queue_size), "--concurrency", "1",
           "--max-pixels", str(args.max_pixels), "--device", "cpu", "--cache-dir", str(log_path.parent / "cache")]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"serve.py exited with status {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "config", timeout=2).read()
            return proc, url, log
        except OSError:
            time.sleep(0.3)
    stop_server(proc, log)
    raise RuntimeError(f"serve.py did not answer on {url} within 120 s")


def stop_server(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def rss_mib(pid) -> float | None:
    """Resident memory of process ``pid`` in MiB (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return None


# ---- requests -------------------------------------------------------------------------------------

def request_args(kind: str, files: dict) -> tuple:
    """(args, kwargs, api_name) of one request of ``kind``."""
    from gradio_client import handle_file

    def editor(background, layers=()):
        return {"background": handle_file(str(background)), "layers": [handle_file(str(p)) for p in layers],
                "composite": None}

    line = files["line"]
    as_file = {"file/automatic": (line, {}), "file/palette": (line, {"palette": "#e63946, #457b9d"}),
               "file/hints": (line, {"hints": handle_file(str(files["hints"]))}), "file/large": (files["large"], {}),
               "file/not-an-image": (files["bad"], {}), "file/too-large": (files["huge"], {})}
    if kind in as_file:
        path, kwargs = as_file[kind]
        return (handle_file(str(path)),), kwargs, "/colorize_file"
    if kind == "file/server-path":  # a path on the server, not an upload
        return (str(line),), {}, "/colorize_file"
    return {
        "editor/automatic": (editor(line), "automatic", ""),
        "editor/hints": (editor(line, [files["hints"]]), "painted hints", ""),
        "editor/blank": (editor(files["blank"]), "automatic", ""),
        "editor/bad-palette": (editor(line), "palette", "#e63946, nope"),
        "editor/no-strokes": (editor(line), "painted hints", ""),
    }[kind], {}, "/colorize"


def judge(kind: str, expected_error, expected_size, outcome, queue_full_ok: bool) -> tuple:
    """(result, problem): result is image | refused | rejected; problem is None or why it is a failure."""
    if isinstance(outcome, BaseException):
        text = " ".join(str(outcome).split())
        if type(outcome).__name__ == "QueueError" or "queue is full" in text.lower():
            return "rejected", None if queue_full_ok else f"{kind}: refused with a full queue ({text})"
        if expected_error and expected_error in text:
            return "refused", None
        return "error", f"{kind}: {type(outcome).__name__}: {text[:200] or '(no message)'}"
    if expected_error:
        return "image", f"{kind}: a bad input was answered with a result ({outcome}) instead of an error"
    try:
        with Image.open(outcome) as image:
            size = image.size
    except Exception as err:  # noqa: BLE001  (any unreadable result is the failure being looked for)
        return "error", f"{kind}: the result {outcome} is not an image ({type(err).__name__})"
    if size != expected_size:
        return "image", f"{kind}: result of size {size}, expected {expected_size}"
    return "image", None


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def run(args) -> dict:
    from gradio_client import Client

    work = Path(tempfile.mkdtemp(prefix="colorizer-load-"))
    files = make_inputs(work, args.max_pixels)
    proc = log = None
    url, pid = args.url, args.server_pid
    if not url:
        print("starting serve.py with a tiny random model ...", flush=True)
        proc, url, log = start_server(write_tiny_export(work / "export"), args, work / "server.log")
        pid = proc.pid
    downloads = work / "downloads"
    try:
        clients = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(args.clients)]
        rng = random.Random(args.seed)
        bad_count = round(args.requests * args.bad_fraction)
        good_kinds, bad_kinds = list(GOOD), list(BAD)
        plan = [bad_kinds[i % len(bad_kinds)] for i in range(bad_count)]
        plan += [good_kinds[i % len(good_kinds)] for i in range(args.requests - bad_count)]
        rng.shuffle(plan)

        rss = {"start": rss_mib(pid), "warm": None, "peak": rss_mib(pid)}
        samples = []  # the server's memory every --report-every requests
        done = {"count": 0}
        lock = threading.Lock()
        warm_at = max(1, args.requests // 5)  # memory is compared from here on: first requests allocate caches
        started = time.time()
        deadline = started + args.max_seconds
        local = threading.local()  # each pool thread is one client
        client_ids = iter(range(args.clients))

        def bind_client() -> None:
            local.client = clients[next(client_ids)]

        def one(kind: str, queue_full_ok: bool = False) -> dict:
            if time.time() > deadline:
                return {"kind": kind, "result": "not sent", "problem": f"{kind}: not sent, --max-seconds reached",
                        "latency": None}
            call_args, kwargs, api_name = request_args(kind, files)
            size = BURST_SIZE if kind == "file/large" else LINE_SIZE
            t0 = time.perf_counter()
            try:
                job = getattr(local, "client", clients[0]).submit(*call_args, api_name=api_name, **kwargs)
                outcome = job.result(timeout=args.timeout)
            except FutureTimeout:
                outcome = TimeoutError(f"no answer within {args.timeout:g} s")
            except Exception as err:  # noqa: BLE001  (judged below: an expected refusal or a failure)
                outcome = err
            latency = time.perf_counter() - t0
            result, problem = judge(kind, (GOOD | BAD).get(kind), size, outcome, queue_full_ok)
            with lock:
                done["count"] += 1
                now = rss_mib(pid)
                if now is not None:
                    rss["peak"] = max(rss["peak"] or 0.0, now)
                    if done["count"] == warm_at:
                        rss["warm"] = now
                if done["count"] % args.report_every == 0 or done["count"] == warm_at:
                    sample = {"requests": done["count"], "seconds": round(time.time() - started, 1),
                              "rss_mib": None if now is None else round(now, 1)}
                    samples.append(sample)
                    mark = " (warm-up point)" if done["count"] == warm_at else ""
                    print(f"  {sample['requests']:>6} requests, {sample['seconds']:>7} s: server RSS "
                          f"{sample['rss_mib'] or '?'} MiB{mark}", flush=True)
            return {"kind": kind, "result": result, "problem": problem, "latency": latency}

        with ThreadPoolExecutor(args.clients, initializer=bind_client) as pool:
            main = list(pool.map(one, plan))
        main_s = time.time() - started

        burst = []
        if args.burst:
            # All at once, through every client's own thread pool: more than the queue holds.
            jobs = []
            for i in range(args.burst):
                call_args, kwargs, api_name = request_args("file/large", files)
                jobs.append((time.perf_counter(), clients[i % len(clients)].submit(*call_args, api_name=api_name)))
            for t0, job in jobs:
                try:
                    outcome = job.result(timeout=args.timeout)
                except FutureTimeout:
                    outcome = TimeoutError(f"no answer within {args.timeout:g} s")
                except Exception as err:  # noqa: BLE001
                    outcome = err
                result, problem = judge("burst", None, BURST_SIZE, outcome, queue_full_ok=True)
                burst.append({"kind": "burst", "result": result, "problem": problem,
                              "latency": time.perf_counter() - t0})
            after = one("file/automatic")  # the server must still answer normally
            after["kind"] = "after burst"
            burst.append(after)
        rss["end"] = rss_mib(pid)
    finally:
        if proc is not None:
            stop_server(proc, log)
        shutil.rmtree(work, ignore_errors=True)

    problems = [r["problem"] for r in main + burst if r["problem"]]
    growth = None
    if rss["end"] is not None and (rss["warm"] or rss["start"]) is not None:
        growth = rss["end"] - (rss["warm"] or rss["start"])
    # Flat after warm-up: the samples from the warm-up point on, second half against first half, by
    # their means. One sample against another would judge the allocator's ups and downs (tens of
    # MiB with 20 clients), not a leak, which raises every later sample.
    after_warm = [x["rss_mib"] for x in samples if x["requests"] >= warm_at and x["rss_mib"] is not None]
    half = len(after_warm) // 2
    trend = (sum(after_warm[half:]) / len(after_warm[half:]) - sum(after_warm[:half]) / half) if half else None
    judged = trend if trend is not None else growth
    if judged is not None and judged > args.max_rss_growth_mb:
        problems.append(f"server memory grew by {judged:.0f} MiB after warm-up (limit {args.max_rss_growth_mb:g})")
    latencies = [r["latency"] for r in main if r["latency"] is not None]
    good = [r for r in main if r["kind"] in GOOD]
    bad = [r for r in main if r["kind"] in BAD]
    summary = {
        "url": url, "requests": len(main), "clients": args.clients, "seconds": round(main_s, 2),
        "good": len(good), "good_images": sum(r["result"] == "image" and not r["problem"] for r in good),
        "bad": len(bad), "bad_refused": sum(r["result"] == "refused" for r in bad),
        "latency_p50_ms": round(1000 * percentile(latencies, 50), 1),
        "latency_p95_ms": round(1000 * percentile(latencies, 95), 1),
        "burst": {"sent": args.burst, "queue_size": args.queue_size if proc is not None else None,
                  "images": sum(r["result"] == "image" for r in burst[:-1]),
                  "rejected": sum(r["result"] == "rejected" for r in burst[:-1]),
                  "answered_after": bool(burst) and not burst[-1]["problem"]} if args.burst else None,
        "rss_mib": {k: (round(v, 1) if v is not None else None) for k, v in rss.items()},
        "rss_growth_mib": round(growth, 1) if growth is not None else None,
        "rss_trend_mib": None if trend is None else round(trend, 1), "rss_samples": samples,
        "failures": len(problems), "problems": problems,
    }
    return summary


def report(summary: dict, max_growth: float) -> None:
    print(f"requests {summary['requests']} from {summary['clients']} clients in {summary['seconds']} s: "
          f"{summary['good_images']}/{summary['good']} good inputs got an image, "
          f"{summary['bad_refused']}/{summary['bad']} bad inputs got a clear error")
    print(f"latency p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms")
    burst = summary["burst"]
    if burst:
        print(f"burst of {burst['sent']} at once (queue {burst['queue_size'] or '?'}): {burst['images']} images, "
              f"{burst['rejected']} rejected as queue full; answers normally afterwards: "
              f"{'yes' if burst['answered_after'] else 'NO'}")
    rss = summary["rss_mib"]
    if rss.get("end") is not None:
        print(f"server memory (RSS): {rss['start']} MiB at start, {rss['warm']} after warm-up, peak {rss['peak']}, "
              f"{rss['end']} at the end ({summary['rss_growth_mib']:+} MiB from warm-up to end)")
        if summary["rss_trend_mib"] is not None:
            print(f"trend after warm-up (mean of the later half of the samples minus the earlier half): "
                  f"{summary['rss_trend_mib']:+} MiB (limit {max_growth:g})")
    else:
        print("server memory: unknown (pass --server-pid on Linux)")
    print(f"failures {summary['failures']}")
    for problem in summary["problems"][:20]:
        print(f"  {problem}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except RuntimeError as err:
        print(f"load_test: {err}", file=sys.stderr)
        return 2
    report(summary, args.max_rss_growth_mb)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
