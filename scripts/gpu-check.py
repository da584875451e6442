#!/usr/bin/env python3
"""The CUDA checks of `scripts/gpu-check device-cuda`, on a machine with an NVIDIA GPU: the
CUDA worker alone (the haiku, /v1/info, the layers llama.cpp offloaded), decode speed and
time to first token on the GPU and on the CPU, 4 and 16 concurrent streams, the same
against a CUDA llama-server when one came along, and the real hive placing and preflighting
CUDA workers. Standard library only (the device has no network). Prints as it goes and
writes figures.json under $OUT.

    python3 scripts/gpu-check.py BUNDLE_DIR
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

X = sys.argv[1]
OUT = os.environ.get("OUT", "/tmp/out")
MODEL = os.path.join(X, "model.gguf")
WORKER = os.path.join(X, "worker", "llm-worker-rbee")
HIVE = os.path.join(X, "rbee-hive")
LLAMA_SERVER = os.path.join(X, "llama-server")
# rbee-bench's prompt: about 30 tokens, raw, with a long greedy continuation.
PROMPT = ("The history of beekeeping goes back thousands of years. In ancient Egypt, beekeepers "
          "moved their hives along the Nile to follow the flowering seasons, and")
TOKENS = int(os.environ.get("RBEE_GPU_CHECK_TOKENS", "128"))
ROUNDS = 3
# A rehearsal on a machine without a GPU runs the "GPU" worker on the CPU.
GPU = os.environ.get("RBEE_GPU_CHECK_BACKEND", "cuda")
figures = {}


def say(*a):
    print(*a, flush=True)


def call(url, body=None, timeout=120, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


class Server:
    """A server process with its log under $OUT, stopped on exit."""

    def __init__(self, name, argv, ready_path, port, env=None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = os.path.join(OUT, f"{name}.log")
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        t0 = time.time()
        while time.time() - t0 < 180:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                st, j = call(self.url + ready_path, timeout=2)
                if st == 200 and (not isinstance(j, dict) or j.get("ready", True)):
                    self.load_s = time.time() - t0
                    say(f"== {name} ready in {self.load_s:.1f} s")
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after 180 s:\n{self.tail()}")

    def tail(self, n=15):
        return "".join(open(self.log, errors="replace").readlines()[-n:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def stream(url, max_tokens=TOKENS):
    """One streamed greedy completion: time to first token, tokens, decode tok/s."""
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    first = last = None
    n = 0
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.time()
                first = first or now
                last = now
                n += 1
    ttft = (first - t0) * 1000 if first else float("nan")
    decode = (n - 1) / (last - first) if n > 1 and last > first else float("nan")
    return {"ttft_ms": ttft, "tokens": n, "decode_tok_s": decode}


def single(url):
    stream(url, 8)  # warm-up
    runs = [stream(url) for _ in range(ROUNDS)]
    return {k: statistics.median(r[k] for r in runs) for k in ("ttft_ms", "decode_tok_s", "tokens")}


def concurrent(url, n):
    results = [None] * n

    def one(i):
        results[i] = stream(url)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    tokens = sum(r["tokens"] for r in results)
    return {"agg_tok_s": tokens / wall, "ttft_p50_ms": statistics.median(r["ttft_ms"] for r in results),
            "tokens": tokens}


def bench(name, url, streams=(4, 16)):
    f = {"single": single(url)}
    for n in streams:
        concurrent(url, n)  # warm-up at that width
        f[f"streams_{n}"] = concurrent(url, n)
    figures[name] = f
    say(f"== {name}: {json.dumps(f)}")


def haiku(url):
    st, j = call(url + "/v1/chat/completions", {
        "model": "smollm2", "messages": [{"role": "user", "content": "Write a haiku about bees"}],
        "max_tokens": 80, "temperature": 0})
    return st, (j["choices"][0]["message"]["content"] if st == 200 else j)


def worker_checks():
    w = Server("worker-cuda", [WORKER, "--model", MODEL, "--backend", GPU, "--device", "0",
                               "--port", "18081", "--slots", "16", "--ctx-size", "1024"],
               "/v1/ready", 18081, {"RBEE_LOG": "info"})
    try:
        st, info = call(w.url + "/v1/info")
        say("== /v1/info", json.dumps(info))
        offload = [l.strip() for l in open(w.log, errors="replace")
                   if "offload" in l or "CUDA0" in l or "using device" in l][:12]
        say("== what llama.cpp said about the GPU:\n" + "\n".join(offload))
        st, text = haiku(w.url)
        say(f"== the haiku on the GPU ({st}):\n{text}")
        figures["haiku_gpu"] = text
        figures["worker_cuda_load_s"] = w.load_s
        bench("worker_cuda", w.url)
    finally:
        w.stop()
    c = Server("worker-cpu", [WORKER, "--model", MODEL, "--backend", "cpu", "--port", "18082"],
               "/v1/ready", 18082, {"RBEE_LOG": "info"})
    try:
        st, text = haiku(c.url)
        say(f"== the haiku on the CPU ({st}):\n{text}")
        figures["haiku_cpu"] = text
        bench("worker_cpu", c.url, streams=())
    finally:
        c.stop()


def llama_server_checks():
    if not os.path.exists(LLAMA_SERVER):
        say("== llama-server (CUDA): not in the bundle; skipped")
        return
    s = Server("llama-server-cuda", [LLAMA_SERVER, "-m", MODEL, "-ngl", "999", "-np", "16",
                                     "-c", str(16 * 1024), "--port", "18083"], "/health", 18083)
    try:
        bench("llama_server_cuda", s.url)
    finally:
        s.stop()


def hive_checks():
    state = "/tmp/rbee-gpu-state"
    subprocess.run(["rm", "-rf", state, "/tmp/rbee-gpu-m"])
    os.makedirs(state)
    os.makedirs("/tmp/rbee-gpu-m")
    # A model far larger than the GPU: the real header, sparse to 150 GiB.
    huge = "/tmp/rbee-gpu-m/huge.gguf"
    with open(MODEL, "rb") as src, open(huge, "wb") as dst:
        dst.write(src.read(8 << 20))
    os.truncate(huge, 150 << 30)
    with open(f"{state}/hive.toml", "w") as f:
        f.write(f'model_dirs = ["{X}", "/tmp/rbee-gpu-m"]\nworker_binary = "{WORKER}"\n')
    h = Server("hive", [HIVE, "--config", f"{state}/hive.toml", "--supervisor", "process",
                        "--state-dir", state, "--port", "19277"], "/v1/health", 19277,
               {"RBEE_LOG": "info"})
    try:
        st, b = call(h.url + "/v1/backends")
        say("== /v1/backends", json.dumps(b))
        t0 = time.time()
        st, j = call(h.url + "/v1/chat/completions", {
            "model": f"file://{MODEL}", "max_tokens": 80, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a haiku about bees"}]}, timeout=300)
        say(f"== the haiku through the hive's front door ({st}, {time.time() - t0:.1f} s with the load):")
        say(j["choices"][0]["message"]["content"] if st == 200 else json.dumps(j))
        st, wl = call(h.url + "/v1/workers/list")
        placed = [(w["id"], w["backend"], w["device"]) for w in wl.get("workers", [])]
        say("== placed by default_backend = auto:", placed)
        figures["hive_front_door"] = {"status": st, "workers": placed}
        for name, body in [
            ("150 GiB model on cuda:0", {"model_ref": f"file://{huge}", "backend": "cuda", "device": 0}),
            ("cuda:7", {"model_ref": f"file://{MODEL}", "backend": "cuda", "device": 7}),
            ("150 GiB model, hive's choice (GPU too small: CPU, then RAM)", {"model_ref": f"file://{huge}"}),
        ]:
            st, j = call(h.url + "/v1/workers/spawn", body)
            say(f"== spawn {name}: {st} {json.dumps(j)[:600]}")
            figures[f"spawn {name}"] = [st, j.get("error", {}).get("code") if isinstance(j, dict) else j]
    finally:
        h.stop()
        say("== hive log (placement lines):")
        say("".join(l for l in open(h.log, errors="replace")
                    if "does not fit" in l or "preflight" in l or "worker" in l.lower())[-3000:])


def table():
    rows = [("worker, GPU", "worker_cuda"), ("llama-server, GPU", "llama_server_cuda"),
            ("worker, CPU", "worker_cpu")]
    say("\n| contender | decode tok/s | TTFT ms | 4 streams tok/s | 16 streams tok/s | TTFT p50 at 16 |")
    say("|---|---|---|---|---|---|")
    for label, key in rows:
        f = figures.get(key)
        if not f:
            continue
        s4, s16 = f.get("streams_4", {}), f.get("streams_16", {})
        say(f"| {label} | {f['single']['decode_tok_s']:.0f} | {f['single']['ttft_ms']:.1f} | "
            f"{s4.get('agg_tok_s', float('nan')):.0f} | {s16.get('agg_tok_s', float('nan')):.0f} | "
            f"{s16.get('ttft_p50_ms', float('nan')):.0f} |")


def main():
    for step in (worker_checks, llama_server_checks, hive_checks):
        try:
            step()
        except Exception as e:  # one broken step must not hide the others' figures
            say(f"!! {step.__name__} failed: {e}")
            figures[f"{step.__name__}_error"] = str(e)
    table()
    with open(os.path.join(OUT, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
